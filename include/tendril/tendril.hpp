// tendril: gevent's programming model for C++20. This umbrella header is all a user needs.
#ifndef TENDRIL_TENDRIL_HPP
#define TENDRIL_TENDRIL_HPP

#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/generator.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/greenlet/stack.hpp"
#include "tendril/hub/exceptions.hpp"
#include "tendril/hub/hub.hpp"
#include "tendril/io/file.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/net/address.hpp"
#include "tendril/net/error.hpp"
#include "tendril/net/resolve.hpp"
#include "tendril/net/server.hpp"
#include "tendril/net/socket.hpp"
#include "tendril/net/tls.hpp"
#include "tendril/sync/async_result.hpp"
#include "tendril/sync/event.hpp"
#include "tendril/sync/mutex.hpp"
#include "tendril/sync/queue.hpp"
#include "tendril/sync/semaphore.hpp"
#include "tendril/task/local.hpp"
#include "tendril/task/offload.hpp"
#include "tendril/task/pool.hpp"
#include "tendril/task/sleep.hpp"
#include "tendril/task/task.hpp"
#include "tendril/task/timeout.hpp"
#include "tendril/task/wait.hpp"
#include "tendril/version.hpp"

#endif
