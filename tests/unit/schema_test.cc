// db/schema.h: what drift compares, normalized.
#include "db/schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace berth;
using testing::ElementsAre;

namespace {

// What mariadb-dump --no-data --skip-comments --compact --routines --triggers --databases prints.
const char* kDump = R"(CREATE DATABASE /*!32312 IF NOT EXISTS*/ `inventory` /*!40100 DEFAULT CHARACTER SET latin1 */;

USE `inventory`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8 */;
CREATE TABLE `stock` (
  `sku` varchar(20) NOT NULL,
  `n` int(11) DEFAULT NULL,
  PRIMARY KEY (`sku`),
  KEY `k_n` (`n`)
) ENGINE=InnoDB AUTO_INCREMENT=1235 DEFAULT CHARSET=latin1 COLLATE=latin1_swedish_ci;
/*!40101 SET character_set_client = @saved_cs_client */;
/*!50001 CREATE VIEW `v_low` AS SELECT
 1 AS `sku` */;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER t_stock BEFORE INSERT ON stock FOR EACH ROW SET NEW.n = IFNULL(NEW.n, 0) */;;
DELIMITER ;
DELIMITER ;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `restock`(IN s VARCHAR(20))
BEGIN
  UPDATE stock SET n = n + 1 WHERE sku = s;
END ;;
DELIMITER ;
/*!50001 DROP VIEW IF EXISTS `v_low`*/;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `v_low` AS select `stock`.`sku` AS `sku` from `stock` where `stock`.`n` < 10 */;
)";

}  // namespace

TEST(Schema, ADumpIsReadObjectByObjectWithoutCountersDefinersOrColumnOrder) {
  auto s = db::parse_schema_dump(kDump);
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::vector<std::string> keys;
  for (const auto& [k, o] : *s) keys.push_back(k);
  EXPECT_THAT(keys, ElementsAre("inventory.restock (procedure)", "inventory.stock", "inventory.t_stock (trigger)",
                                "inventory.v_low (view)"));
  const auto& stock = s->at("inventory.stock");
  EXPECT_EQ(stock.kind, "table");
  EXPECT_THAT(stock.lines, ElementsAre("KEY `k_n` (`n`)", "PRIMARY KEY (`sku`)", "`n` int(11) DEFAULT NULL",
                                       "`sku` varchar(20) NOT NULL",
                                       "options:ENGINE=InnoDB DEFAULT CHARSET=latin1 COLLATE=latin1_swedish_ci"));
  // The view's real definition (not the dump's placeholder), without who made it.
  const auto& view = s->at("inventory.v_low (view)");
  ASSERT_EQ(view.lines.size(), 1u);
  EXPECT_EQ(view.lines[0].find("DEFINER"), std::string::npos) << view.lines[0];
  EXPECT_NE(view.lines[0].find("where `stock`.`n` < 10"), std::string::npos) << view.lines[0];
  EXPECT_EQ(s->at("inventory.t_stock (trigger)").lines[0].find("DEFINER"), std::string::npos);
}

TEST(Schema, OnlyRealDifferencesAreReportedTableByTable) {
  auto golden = db::parse_schema_dump(kDump);
  ASSERT_TRUE(golden.ok());
  // Another counter, columns in another order, another definer: no drift.
  std::string same = kDump;
  same.replace(same.find("AUTO_INCREMENT=1235"), 19, "AUTO_INCREMENT=99999");
  same.replace(same.find("  `sku` varchar(20) NOT NULL,\n  `n` int(11) DEFAULT NULL,\n"),
               std::string("  `sku` varchar(20) NOT NULL,\n  `n` int(11) DEFAULT NULL,\n").size(),
               "  `n` int(11) DEFAULT NULL,\n  `sku` varchar(20) NOT NULL,\n");
  same.replace(same.find("DEFINER=`root`@`localhost` PROCEDURE"), 26, "DEFINER=`dev`@`%`");
  auto copy = db::parse_schema_dump(same);
  ASSERT_TRUE(copy.ok());
  EXPECT_TRUE(db::compare_schemas(*golden, *copy).empty());
  // A manual ALTER TABLE, a table of one's own, a dropped view: each named.
  std::string changed = kDump;
  changed.replace(changed.find("  PRIMARY KEY (`sku`),"), 0, "  `note` text DEFAULT NULL,\n");
  changed.erase(changed.find("/*!50001 DROP VIEW IF EXISTS `v_low`*/;"));  // only the placeholder is left
  changed += "CREATE TABLE `mine` (\n  `id` int(11) NOT NULL\n) ENGINE=InnoDB;\n";
  auto drifted = db::parse_schema_dump(changed);
  ASSERT_TRUE(drifted.ok());
  auto d = db::compare_schemas(*golden, *drifted);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].object, "inventory.mine");
  EXPECT_EQ(d[0].what, db::SchemaDifference::What::kExtra);
  EXPECT_EQ(d[1].object, "inventory.stock");
  EXPECT_EQ(d[1].what, db::SchemaDifference::What::kChanged);
  EXPECT_THAT(d[1].only_actual, ElementsAre("`note` text DEFAULT NULL"));
  EXPECT_TRUE(d[1].only_expected.empty());
  EXPECT_EQ(d[2].object, "inventory.v_low (view)");  // its placeholder stayed: its definition differs
}

TEST(Schema, ADumpTooLargeOrWithoutADelimiterIsRefused) {
  EXPECT_FALSE(db::parse_schema_dump("DELIMITER \n").ok());
  EXPECT_FALSE(db::parse_schema_dump(std::string(db::kMaxSchemaDumpBytes + 1, ' ')).ok());
}
