-- WordPress 6.x core users tables on MariaDB, as wp-admin/includes/schema.php
-- creates them: bigint(20) unsigned key named `ID`, utf8mb4 with the
-- unicode_520 collation, indexes on login, nicename and email.
CREATE TABLE `wp_users` (
  `ID` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `user_login` varchar(60) NOT NULL DEFAULT '',
  `user_pass` varchar(255) NOT NULL DEFAULT '',
  `user_nicename` varchar(50) NOT NULL DEFAULT '',
  `user_email` varchar(100) NOT NULL DEFAULT '',
  `user_url` varchar(100) NOT NULL DEFAULT '',
  `user_registered` datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  `user_activation_key` varchar(255) NOT NULL DEFAULT '',
  `user_status` int(11) NOT NULL DEFAULT 0,
  `display_name` varchar(250) NOT NULL DEFAULT '',
  PRIMARY KEY (`ID`),
  KEY `user_login_key` (`user_login`),
  KEY `user_nicename` (`user_nicename`),
  KEY `user_email` (`user_email`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE `wp_usermeta` (
  `umeta_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `user_id` bigint(20) unsigned NOT NULL DEFAULT 0,
  `meta_key` varchar(255) DEFAULT NULL,
  `meta_value` longtext,
  PRIMARY KEY (`umeta_id`),
  KEY `user_id` (`user_id`),
  KEY `meta_key` (`meta_key`(191))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

INSERT INTO `wp_users` (`user_login`, `user_pass`, `user_nicename`, `user_email`, `user_registered`, `display_name`) VALUES
('admin',        '$P$BxaXBR/iH2LAUGdmtQzziiN617wQRp.', 'admin',        'webmaster@corp.example', '2016-04-01 12:00:00', 'Webmaster'),
('editor',       '$P$BDw3HOeOOYYrwhUAtZGuOQzk7IoiFv.', 'editor',       'editor@corp.example',    '2017-09-12 08:30:00', 'Edith Editor'),
('zoë',          '$P$BcYq66m5sS6PnClzw2HE6wDgc33Ap61', 'zoe',          'zoe@corp.example',       '2019-11-23 17:45:00', 'Zoë Ångström 😀'),
('author',       '$P$BXM89uIhakoprw/Yw68nmeCWotiZk50', 'author',       'Author@Corp.Example',    '2020-02-29 00:00:00', 'A. Author'),
('shop_manager', '$wp$2y$10$ZkSFBnJ5Tt2G.Fg/XVDIBOr2wXvuteLG2c2D52UQKdgyL7NSmJOi6', 'shop_manager', 'shop@corp.example', '2024-05-05 05:05:05', 'Shop Manager'),
('subscriber',   '$wp$2y$10$/QyTPgo/zuzJvd33tzKp6OYalFp4TnDGmI2iWEz0nTbRM/D1TwGHa', 'subscriber',   'sub@corp.example',  '2025-01-01 00:00:01', 'Sub Scriber'),
-- a user created by a plugin without a password yet
('import-bot',   '',                                   'import-bot',   'import@corp.example',    '2025-02-02 02:02:02', 'Import Bot');

INSERT INTO `wp_usermeta` (`user_id`, `meta_key`, `meta_value`) VALUES
(1, 'wp_capabilities', 'a:1:{s:13:"administrator";b:1;}'),
(1, '_two_factor_totp_key', 'JBSWY3DPEHPK3PXP'),
(1, '_two_factor_enabled_providers', 'a:1:{i:0;s:15:"Two_Factor_Totp";}'),
(2, 'wp_capabilities', 'a:1:{s:6:"editor";b:1;}');
