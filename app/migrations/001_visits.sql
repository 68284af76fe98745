-- The visits table: one row per visit of the site.
CREATE TABLE IF NOT EXISTS visits (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  created_at    TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  app_host      VARCHAR(255)    NOT NULL,
  client_ip     VARCHAR(45)     NULL,
  forwarded_for VARCHAR(1024)   NULL,
  user_agent    VARCHAR(512)    NULL,
  KEY created_at (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
