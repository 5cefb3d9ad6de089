-- Nextcloud 28 on MariaDB, as occ maintenance:install creates it with
-- mysql.utf8mb4: ROW_FORMAT=COMPRESSED (which rules out ALGORITHM=INSTANT),
-- utf8mb4_bin everywhere, a varchar key `uid` that is also the login name,
-- no e-mail column (it lives in oc_accounts_data), the password as
-- "<version>|<hash>".
CREATE TABLE `oc_users` (
  `uid` varchar(64) COLLATE utf8mb4_bin NOT NULL DEFAULT '',
  `displayname` varchar(64) COLLATE utf8mb4_bin DEFAULT NULL,
  `password` varchar(255) COLLATE utf8mb4_bin NOT NULL DEFAULT '',
  `uid_lower` varchar(64) COLLATE utf8mb4_bin DEFAULT '',
  PRIMARY KEY (`uid`),
  KEY `user_uid_lower` (`uid_lower`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=COMPRESSED;

CREATE TABLE `oc_group_user` (
  `gid` varchar(64) COLLATE utf8mb4_bin NOT NULL DEFAULT '',
  `uid` varchar(64) COLLATE utf8mb4_bin NOT NULL DEFAULT '',
  PRIMARY KEY (`gid`,`uid`),
  KEY `gu_uid_index` (`uid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=COMPRESSED;

INSERT INTO `oc_users` (`uid`, `displayname`, `password`, `uid_lower`) VALUES
('admin',      'Administrator', '3|$argon2id$v=19$m=65536,t=4,p=1$ZmhXTEd6aW5wU1hQUGhpWQ$Y2RzbDFJc0d2a0xqY2hWbzZ5eGZqZw', 'admin'),
('Alice',      'Alice Ådahl',   '3|$argon2id$v=19$m=65536,t=4,p=1$bG9uZ3NhbHRsb25nc2FsdA$eW91d2lsbG5ldmVyZ3Vlc3N0aGlz', 'alice'),
('bob',        'Bob',           '2|$2y$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy', 'bob'),
('carol.smith','Carol Smith',   '1|$2y$10$ZhjW0zFqkN1QjrvO3ZiG2.Ju3wH5m6dHqNqE8iX0kFvSdJbTg9YyS', 'carol.smith'),
('dave',       NULL,            '1|$2y$10$abcdefghijklmnopqrstuu5Bx2UpWtQZ4dQTo3HkeplPHvHfBAYe.', 'dave'),
('zoë',        'Zoë Ørsted 😀',  '3|$argon2id$v=19$m=65536,t=4,p=1$c2FsdHNhbHRzYWx0$emXDq21vcmVieXRlc2hlcmU', 'zoë'),
-- a user whose password Nextcloud never set (created by occ user:add --password-from-env with an empty env)
('service-bot', 'Service Bot',  '', 'service-bot');

INSERT INTO `oc_group_user` (`gid`, `uid`) VALUES ('admin', 'admin'), ('staff', 'Alice'), ('staff', 'bob');
