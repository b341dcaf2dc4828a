// The subcommands of the tendril command.
#ifndef TENDRIL_APPS_TENDRIL_COMMAND_HPP
#define TENDRIL_APPS_TENDRIL_COMMAND_HPP

#include <stdexcept>
#include <string>
#include <vector>

namespace tendril::app {

using args = std::vector<std::string>;

// usage_error: the command line is wrong (an unknown option, a missing or bad value). main()
// prints it and exits 2, as for an unknown command; anything else thrown exits 1, a failure
// while running.
class usage_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Each returns the process exit status.
int tour(const args& a);
int echo_server(const args& a);
int echo_client(const args& a);
int run(const args& a);
int crawl_command(const args& a);
int serve_model(const args& a);
int load(const args& a);
int iomodels(const args& a);

}  // namespace tendril::app

#endif
