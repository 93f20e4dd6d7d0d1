// MariaDB's server on a copy: mariadbd from Debian's package, checked by the mariadb client.
#include <algorithm>

#include <fmt/format.h>

#include "base/text.h"
#include "db/profile/profile.h"

namespace berth::db {

ServerProfile mariadb_profile() {
  ServerProfile p;
  p.engine = "mariadb";
  p.port = 3306;
  p.command = [](const std::string& flags) {
    return "mariadbd --no-defaults --user=root --datadir=${datadir} --bind-address=${ip} --port=${port.sql} "
           "--socket=${rundir}/mysqld.sock --pid-file=${rundir}/mysqld.pid --skip-name-resolve --skip-log-bin "
           "--innodb-buffer-pool-load-at-startup=OFF --innodb-buffer-pool-dump-at-shutdown=OFF" +
           flags;
  };
  p.option_flag = [](const std::string& name, const std::string& value) {
    std::string flag = name;
    std::replace(flag.begin(), flag.end(), '_', '-');
    return shell_quote("--" + flag + "=" + value);
  };
  p.health_command = [](const std::string& user, const std::string& password) {
    return fmt::format("mariadb --no-defaults --protocol=TCP -h \"$BERTH_IP\" -P \"$BERTH_PORT_SQL\" -u '{}' -p'{}' -N -e 'SELECT 1'",
                       user, password);
  };
  p.url = [](const std::string& user, const std::string& password, const std::string& host, int port) {
    return fmt::format("mysql://{}:{}@{}:{}/", user, password, host, port);
  };
  // `--user=root` lets the process form start as whoever runs it; in a container it only makes
  // mariadbd warn that it is not root.
  p.not_in_containers = {"--user=root"};
  return p;
}

}  // namespace berth::db
