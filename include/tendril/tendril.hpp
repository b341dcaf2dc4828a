// tendril: gevent's programming model for C++20. This umbrella header is all a user needs.
#ifndef TENDRIL_TENDRIL_HPP
#define TENDRIL_TENDRIL_HPP

#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/generator.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/greenlet/stack.hpp"
#include "tendril/version.hpp"

#endif
