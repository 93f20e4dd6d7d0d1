#!/usr/bin/env bash
# make_standard.sh — a deterministic "standard database" of 45 schemas for MariaDB, as SQL on stdout.
#
#   bench/make_standard.sh SCHEMA [SCALE]     SQL for one schema (app01 … app45)
#   bench/make_standard.sh --list             the schema names
#
# app01 is the largest (its order_items is the table the benchmark queries), app02-03 large, app04-13
# medium (indexed tables plus lookups, a view, a procedure and a trigger), app14-45 small (15 lookup
# tables each). Rows come from MariaDB's sequence engine and fixed formulas (no RAND() without a
# seed), so every run builds the same data. SCALE 1 gives a data directory of about 2 GB; 0.05 is
# CI-sized (~150 MB with InnoDB's fixed files).
set -euo pipefail
N_SCHEMAS=45

big() {  # $1 = rows of orders
  local n=$1 c=$(( $1 / 5 > 0 ? $1 / 5 : 1 ))
  cat <<SQL
CREATE TABLE customers (id INT UNSIGNED PRIMARY KEY, email VARCHAR(120) NOT NULL, name VARCHAR(100),
  country CHAR(2), status ENUM('active','inactive','banned') NOT NULL, created_at DATETIME NOT NULL,
  UNIQUE KEY uk_email (email), KEY k_country (country, status)) ENGINE=InnoDB;
INSERT INTO customers SELECT seq, CONCAT('u', seq, '@', ELT(1 + seq % 4, 'example.com', 'mail.test', 'shop.io', 'corp.local')),
  CONCAT(ELT(1 + seq % 8, 'Ann','Bo','Chen','Dana','Eve','Femi','Gita','Hugo'), ' ', ELT(1 + (seq * 7) % 6, 'Smith','Wang','Ito','Khan','Rossi','Berg')),
  ELT(1 + seq % 6, 'US','CN','DE','JP','BR','FR'), ELT(1 + seq % 3, 'active','inactive','banned'),
  '2018-01-01' + INTERVAL (seq * 7919) % (6 * 365 * 86400) SECOND FROM seq_1_to_$c;
CREATE TABLE orders (id BIGINT UNSIGNED PRIMARY KEY, customer_id INT UNSIGNED NOT NULL, status TINYINT NOT NULL,
  amount DECIMAL(12,2) NOT NULL, currency CHAR(3) NOT NULL, created_at DATETIME NOT NULL, note VARCHAR(255),
  KEY k_customer (customer_id), KEY k_created (created_at), KEY k_status (status, created_at)) ENGINE=InnoDB;
INSERT INTO orders SELECT seq, 1 + (seq * 31) % $c, seq % 7, ((seq * 2654435761) % 200000) / 100, ELT(1 + seq % 3, 'USD','EUR','CNY'),
  '2019-01-01' + INTERVAL (seq * 104729) % (5 * 365 * 86400) SECOND,
  IF(seq % 3 = 0, NULL, CONCAT('deliver to door ', LEFT(MD5(seq), 16 + seq % 16))) FROM seq_1_to_$n;
CREATE TABLE order_items (id BIGINT UNSIGNED PRIMARY KEY, order_id BIGINT UNSIGNED NOT NULL, sku VARCHAR(32) NOT NULL,
  qty SMALLINT NOT NULL, unit_price DECIMAL(10,2) NOT NULL, KEY k_order (order_id), KEY k_sku (sku)) ENGINE=InnoDB;
INSERT INTO order_items SELECT seq, 1 + (seq DIV 2) % $n, CONCAT('SKU-', LPAD((seq * 2654435761) % 50000, 6, '0')), 1 + seq % 5,
  ((seq * 40503) % 30000) / 100 FROM seq_1_to_$((n * 2));
CREATE TABLE audit_log (id BIGINT UNSIGNED PRIMARY KEY, entity VARCHAR(32) NOT NULL, entity_id BIGINT NOT NULL,
  action VARCHAR(16) NOT NULL, payload TEXT, created_at DATETIME NOT NULL, KEY k_entity (entity, entity_id)) ENGINE=InnoDB;
INSERT INTO audit_log SELECT seq, ELT(1 + seq % 4, 'order','customer','item','payment'), seq % $n, ELT(1 + seq % 3, 'create','update','delete'),
  CONCAT('{"session":"', SHA1(seq), '","ua":"Mozilla/5.0 (X11; Linux x86_64)","n":', seq % 97, '}'),
  '2021-01-01' + INTERVAL (seq * 15485863) % (3 * 365 * 86400) SECOND FROM seq_1_to_$((n * 2 / 5 > 0 ? n * 2 / 5 : 1));
SQL
}

lookups() {  # $1 = how many lookup tables
  local k rows
  for k in $(seq -w 1 "$1"); do
    rows=$(( (10#$k * 137) % 2000 ))
    echo "CREATE TABLE lk_$k (id INT PRIMARY KEY, code VARCHAR(32) NOT NULL, name VARCHAR(100) NOT NULL, value DECIMAL(10,2),
  enabled TINYINT NOT NULL DEFAULT 1, updated_at DATETIME NOT NULL, UNIQUE KEY uk_code (code)) ENGINE=InnoDB;"
    [ "$rows" -gt 0 ] && echo "INSERT INTO lk_$k SELECT seq, CONCAT('C$k-', seq), CONCAT('value ', seq, ' ', MD5(seq)), seq / 7, seq % 2,
  '2023-06-01' + INTERVAL seq HOUR FROM seq_1_to_$rows;"
  done
  return 0
}

schema() {  # $1 = appNN, $2 = scale
  local s=$1 i=$((10#${1#app})) scale=$2
  rows() { awk -v b="$1" -v s="$scale" 'BEGIN { r = int(b * s); print (r < 10 ? 10 : r) }'; }
  echo "CREATE DATABASE $s; USE $s;"
  if [ "$i" -eq 1 ]; then big "$(rows 800000)"; lookups 5
  elif [ "$i" -le 3 ]; then big "$(rows 400000)"; lookups 5
  elif [ "$i" -le 13 ]; then
    big "$(rows 20000)"; lookups 10
    cat <<'SQL'
CREATE VIEW v_totals AS SELECT customer_id, COUNT(*) n, SUM(amount) total FROM orders GROUP BY customer_id;
CREATE PROCEDURE p_touch(IN oid BIGINT) UPDATE orders SET status = status WHERE id = oid;
CREATE TRIGGER t_orders AFTER UPDATE ON orders FOR EACH ROW INSERT INTO audit_log (id, entity, entity_id, action, created_at)
  VALUES ((SELECT COALESCE(MAX(a.id), 0) + 1 FROM audit_log a), 'order', NEW.id, 'update', '2024-01-01');
SQL
  else lookups 15
  fi
}

case "${1:-}" in
  --list) for i in $(seq -w 1 $N_SCHEMAS); do echo "app$i"; done ;;
  app[0-9][0-9]) schema "$1" "${2:-1}" ;;
  *) sed -n 2,12p "$0"; exit 1 ;;
esac
