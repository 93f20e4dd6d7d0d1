// db/mariadb/mariadb_engine.h — the Engine for MariaDB (mariadbd, mariadb-backup,
// mariadb-install-db and the mariadb client from Debian's packages).
#pragma once

#include "db/engine.h"

namespace berth::db {

class MariadbEngine final : public Engine {
 public:
  std::string name() const override { return "mariadb"; }
  Status copy_running(const ServerSource& source, const std::string& dir, const std::string& log) override;
  Status copy_datadir(const std::string& from, const std::string& dir, const std::string& log) override;
  Status load_dump(const std::string& dump, const std::string& dir, const std::string& log) override;
  Status seal(const std::string& dir, const Account& account, const std::string& log) override;
  Status apply(const std::string& dir, const std::vector<Migration>& migrations, const Account& account,
               const std::string& log) override;
  Status apply_live(const ServerSource& server, const std::vector<Migration>& migrations, const std::string& log) override;
  Result<Schema> schema(const ServerSource& server, const std::string& log) override;
  Result<Schema> schema_of(const std::string& dir, const std::string& log) override;
};

}  // namespace berth::db
