// The subcommands of the tendril command.
#ifndef TENDRIL_APPS_TENDRIL_COMMAND_HPP
#define TENDRIL_APPS_TENDRIL_COMMAND_HPP

#include <string>
#include <vector>

namespace tendril::app {

using args = std::vector<std::string>;

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
