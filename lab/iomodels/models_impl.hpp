// The models, one function per file, gathered by models() (models.cpp) in the seed's order.
#ifndef TENDRIL_LAB_IOMODELS_MODELS_IMPL_HPP
#define TENDRIL_LAB_IOMODELS_MODELS_IMPL_HPP

#include "model.hpp"

namespace tendril::lab {

model threads_model();           // threads.cpp
model thread_pool_model();       // thread_pool.cpp
model nonblocking_model();       // nonblocking.cpp
model select_model();            // select.cpp
model poll_model();              // poll.cpp
model epoll_lt_model();          // epoll.cpp
model epoll_et_model();          // epoll.cpp
model signal_model();            // signal.cpp
model io_uring_model();          // io_uring.cpp
model tendril_io_uring_model();  // tendril.cpp
model tendril_epoll_model();     // tendril.cpp
model tendril_poll_model();      // tendril.cpp

// io_uring_refused() is empty when this machine lets a process make an io_uring, else why
// not (io_uring.cpp; the tendril-io_uring model asks it too).
std::string io_uring_refused();

}  // namespace tendril::lab

#endif
