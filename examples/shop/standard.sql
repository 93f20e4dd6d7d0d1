-- The shop's "standard database": a few schemas every environment starts from.
-- `berth db import shop --from-dump examples/shop/standard.sql` loads it once into a fresh
-- MariaDB and snapshots it; environments get copies of the snapshot, not of this file.
CREATE DATABASE catalog;
USE catalog;
CREATE TABLE products (id INT PRIMARY KEY, sku VARCHAR(32) NOT NULL UNIQUE, name VARCHAR(100) NOT NULL,
  price DECIMAL(10,2) NOT NULL) ENGINE=InnoDB;
INSERT INTO products SELECT seq, CONCAT('SKU-', LPAD(seq, 6, '0')), CONCAT('product ', seq), (seq % 500) + 0.99 FROM seq_1_to_20000;

CREATE DATABASE orders;
USE orders;
CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT NOT NULL, total DECIMAL(12,2) NOT NULL,
  created_at DATETIME NOT NULL, KEY k_user (user_id)) ENGINE=InnoDB;
INSERT INTO orders SELECT seq, 1 + seq % 5000, (seq * 7919 % 100000) / 100, '2026-01-01' + INTERVAL seq MINUTE FROM seq_1_to_100000;

CREATE DATABASE users;
USE users;
CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(120) NOT NULL UNIQUE, country CHAR(2) NOT NULL) ENGINE=InnoDB;
INSERT INTO users SELECT seq, CONCAT('user', seq, '@example.com'), ELT(1 + seq % 4, 'DE', 'US', 'CN', 'JP') FROM seq_1_to_5000;
