-- Gitea 1.2x on SQLite (xorm-generated): a table called `user` (an SQL
-- reserved word), the password in `passwd` as hex with its salt in another
-- column, and Gitea's own TOTP table.
CREATE TABLE `user` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `lower_name` TEXT NOT NULL, `name` TEXT NOT NULL, `full_name` TEXT NULL, `email` TEXT NOT NULL, `keep_email_private` INTEGER NULL, `email_notifications_preference` TEXT DEFAULT 'enabled' NOT NULL, `passwd` TEXT NOT NULL, `passwd_hash_algo` TEXT DEFAULT 'argon2' NOT NULL, `must_change_password` INTEGER DEFAULT 0 NOT NULL, `login_type` INTEGER NULL, `login_source` INTEGER DEFAULT 0 NOT NULL, `login_name` TEXT NULL, `type` INTEGER NULL, `location` TEXT NULL, `website` TEXT NULL, `rands` TEXT NULL, `salt` TEXT NULL, `language` TEXT NULL, `description` TEXT NULL, `created_unix` INTEGER NULL, `updated_unix` INTEGER NULL, `last_login_unix` INTEGER NULL, `last_repo_visibility` INTEGER NULL, `max_repo_creation` INTEGER DEFAULT -1 NOT NULL, `is_active` INTEGER NULL, `is_admin` INTEGER NULL, `is_restricted` INTEGER DEFAULT 0 NOT NULL, `allow_git_hook` INTEGER NULL, `allow_import_local` INTEGER NULL, `allow_create_organization` INTEGER DEFAULT 1 NULL, `prohibit_login` INTEGER DEFAULT 0 NOT NULL, `avatar` TEXT NOT NULL, `avatar_email` TEXT NOT NULL, `use_custom_avatar` INTEGER NULL, `num_followers` INTEGER NULL, `num_following` INTEGER DEFAULT 0 NOT NULL, `num_stars` INTEGER NULL, `num_repos` INTEGER NULL, `num_teams` INTEGER NULL, `num_members` INTEGER NULL, `visibility` INTEGER DEFAULT 0 NOT NULL, `repo_admin_change_team_access` INTEGER DEFAULT 0 NOT NULL, `diff_view_style` TEXT DEFAULT '' NOT NULL, `theme` TEXT DEFAULT '' NOT NULL, `keep_activity_private` INTEGER DEFAULT 0 NOT NULL);
CREATE UNIQUE INDEX `UQE_user_lower_name` ON `user` (`lower_name`);
CREATE UNIQUE INDEX `UQE_user_name` ON `user` (`name`);
CREATE INDEX `IDX_user_created_unix` ON `user` (`created_unix`);
CREATE INDEX `IDX_user_updated_unix` ON `user` (`updated_unix`);
CREATE INDEX `IDX_user_last_login_unix` ON `user` (`last_login_unix`);
CREATE INDEX `IDX_user_is_active` ON `user` (`is_active`);

CREATE TABLE `two_factor` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `uid` INTEGER NULL, `secret` TEXT NULL, `scratch_salt` TEXT NULL, `scratch_hash` TEXT NULL, `last_used_passcode` TEXT NULL, `created_unix` INTEGER NULL, `updated_unix` INTEGER NULL);
CREATE UNIQUE INDEX `UQE_two_factor_uid` ON `two_factor` (`uid`);

INSERT INTO `user` (`lower_name`, `name`, `full_name`, `email`, `passwd`, `passwd_hash_algo`, `salt`, `rands`, `login_type`, `is_active`, `is_admin`, `avatar`, `avatar_email`, `created_unix`) VALUES
('gitea_admin', 'gitea_admin', 'Gitea Admin', 'admin@corp.example', '2730d1f0118aff44c14bb55ba7a2a040f8997109a39c236d33712ec0779053e4c7da41f8a7fea492d054f3891f2dc414dd76', 'argon2$2$65536$8$50', 'QJziP9yxya35hblVkmevjtGO3a2XlD1O', 'bWGLzIq4rQyVhCR2', 0, 1, 1, '', 'admin@corp.example', 1600000000),
('alice', 'Alice', 'Alice Martin', 'alice.martin@corp.example', '99bf044f78b7573c492b75e29879c2d4c757e382abffc16eeac995c418012de92d7f4bf82e500d55eff78e93e9fa3bbe0267', 'argon2$2$65536$8$50', '1EQQe8T1L6E9QEXrQU5PN1MxUe1v8gpF', 'o7ZxB3nT1qS9vE2m', 0, 1, 0, '', 'alice.martin@corp.example', 1600000100),
('jürgen', 'Jürgen', 'Jürgen Weiß', 'juergen@corp.example', '716105d1833bd63e7562f3f16491c38aaff5042890a32708793342ff560b75b0bd525d152426120bdbdf4fb3c713b0132903', 'argon2$2$65536$8$50', 'i7k3o742zpAO7O3pSJSCi36ga7sP3mbZ', 'Qm4nR8sT2vW6xY0z', 0, 1, 0, '', 'juergen@corp.example', 1600000200),
('ci-bot', 'ci-bot', 'CI Bot', 'ci@corp.example', '34724690ad9e5b2ea3a22f5f71292cf591367ef751cfc761101b7816d5c6a455736354df4a30e2e1b5f74fb4cefde9098aa6', 'argon2$2$65536$8$50', '1XnnBGkbocVI6JuvGbqqoI0TNPDmdatq', 'a1B2c3D4e5F6g7H8', 0, 1, 0, '', 'ci@corp.example', 1600000300),
('legacy', 'legacy', 'Legacy Account', 'legacy@corp.example', 'a40aba0c38b1138a31d5f7d0d39619408af8652b70b05f4d1654672f2d7fadfc4bb3c599b6d0b126cfbc81a3cf59f558c7a8', 'pbkdf2', 'gkUgU6PDFUM72jjR5bkBHmhaWh97G8gq', 'Zz9Yy8Xx7Ww6Vv5U', 0, 1, 0, '', 'legacy@corp.example', 1500000000),
-- an LDAP-sourced Gitea account: no local password
('ldap.user', 'ldap.user', 'LDAP User', 'ldap.user@corp.example', '', '', '', 'Uu4Tt3Ss2Rr1Qq0P', 2, 1, 0, '', 'ldap.user@corp.example', 1700000000);

INSERT INTO `two_factor` (`uid`, `secret`, `scratch_salt`, `scratch_hash`, `created_unix`) VALUES
(1, 'b2N0ZXQtc2VjcmV0LWVuY3J5cHRlZA==', 'sAlT1234', 'c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00', 1600000500);
