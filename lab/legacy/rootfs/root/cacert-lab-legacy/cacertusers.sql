-- The Puppet era's account database (hand-written in the lab; idempotent).
CREATE DATABASE IF NOT EXISTS cacertusers CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
USE cacertusers;

CREATE TABLE IF NOT EXISTS users (
  login VARCHAR(255) NOT NULL PRIMARY KEY,
  mailbox VARCHAR(64) NOT NULL UNIQUE,
  password VARCHAR(255) NOT NULL,
  active TINYINT(1) NOT NULL DEFAULT 1,
  realname VARCHAR(255) NULL,
  created TIMESTAMP DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS aliases (
  alias VARCHAR(255) NOT NULL,
  owner VARCHAR(255) NOT NULL,
  send_as TINYINT(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (alias, owner)
) ENGINE=InnoDB;

CREATE OR REPLACE VIEW legacy_dovecot_passdb AS
  SELECT login, password FROM users WHERE active = 1;

INSERT INTO aliases (alias, owner, send_as) VALUES
  ('pr@cacert.test', 'alice@cacert.test', 1),
  ('info@cacert.test', 'bob@cacert.test', 0)
  ON DUPLICATE KEY UPDATE send_as = VALUES(send_as);
