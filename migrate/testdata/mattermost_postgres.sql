-- Mattermost 9 on PostgreSQL, as its migrations create the users table:
-- a varchar(26) key, username and email each with a unique constraint and
-- a lower(...) text_pattern_ops index (which serves the case-insensitive
-- equality lookups passbridge needs, so passbridge adds none), a bcrypt
-- password, no boolean active column (deleteat instead).
CREATE TABLE users (
    id character varying(26) NOT NULL,
    createat bigint,
    updateat bigint,
    deleteat bigint,
    username character varying(64),
    password character varying(128),
    authdata character varying(128),
    authservice character varying(32),
    email character varying(128),
    emailverified boolean,
    nickname character varying(64),
    firstname character varying(64),
    lastname character varying(64),
    roles character varying(256),
    allowmarketing boolean,
    props jsonb,
    notifyprops jsonb,
    lastpasswordupdate bigint,
    lastpictureupdate bigint,
    failedattempts integer,
    locale character varying(5),
    mfaactive boolean,
    mfasecret character varying(128),
    "position" character varying(128),
    timezone jsonb,
    remoteid character varying(26),
    lastlogin bigint DEFAULT 0 NOT NULL,
    mfausedtimestamps jsonb
);
ALTER TABLE ONLY users ADD CONSTRAINT users_pkey PRIMARY KEY (id);
ALTER TABLE ONLY users ADD CONSTRAINT users_email_key UNIQUE (email);
ALTER TABLE ONLY users ADD CONSTRAINT users_username_key UNIQUE (username);
CREATE INDEX idx_users_email_lower_textpattern ON users USING btree (lower((email)::text) text_pattern_ops);
CREATE INDEX idx_users_username_lower_textpattern ON users USING btree (lower((username)::text) text_pattern_ops);
CREATE INDEX idx_users_nickname_lower_textpattern ON users USING btree (lower((nickname)::text) text_pattern_ops);
CREATE INDEX idx_users_create_at ON users USING btree (createat);
CREATE INDEX idx_users_delete_at ON users USING btree (deleteat);

INSERT INTO users (id, createat, updateat, deleteat, username, password, email, emailverified, nickname, firstname, lastname, roles, locale, mfaactive) VALUES
('8xqkz1mpyjbu5b1rd7kf3nk1ce', 1700000000000, 1700000000000, 0, 'sysadmin', '$2a$10$1ZC8Ptd4B0CQN9OiqCdf2uBXdNAH7WrwKnhzOFPI7VQTpoBzU3bcq', 'sysadmin@corp.example', true, '', 'Sys', 'Admin', 'system_user system_admin', 'en', false),
('cqy8fhzmrpnobqeaysbbsx9wsa', 1700000001000, 1700000001000, 0, 'alice', '$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy', 'Alice@Corp.Example', true, 'ali', 'Alice', 'Ådahl', 'system_user', 'en', true),
('f3utw1a8kjgk3xrm6zwxo8k5ry', 1700000002000, 1700000002000, 0, 'bob', '$2a$10$ZhjW0zFqkN1QjrvO3ZiG2.Ju3wH5m6dHqNqE8iX0kFvSdJbTg9YyS', 'bob@corp.example', false, '', 'Bob', '', 'system_user', 'de', false),
('h9bnj4kxuif7tyfmqa5a3w8pdr', 1700000003000, 1700000003000, 1700001000000, 'carol.smith', '$2a$10$abcdefghijklmnopqrstuu5Bx2UpWtQZ4dQTo3HkeplPHvHfBAYe.', 'carol.smith@corp.example', true, '', 'Carol', 'Smith', 'system_user', 'en', false),
('k1pd7gw6ef8cmc4rdjqh9e3ohw', 1700000004000, 1700000004000, 0, 'zoë', '$2a$10$emXDq21vcmVieXRlc2hlcmUuemXDq21vcmVieXRlc2hlcmUuabcde', 'zoe@corp.example', true, 'Zoë', 'Zoë', 'Ørsted', 'system_user', 'fr', false),
('m5r8sxw3zpbw9gq1t7d6ycnaxo', 1700000005000, 1700000005000, 0, 'gitlab-user', '', 'gl@corp.example', true, '', '', '', 'system_user', 'en', false),
('p2ngq4v9o3n5jt8kxw1zbe6lma', 1700000006000, 1700000006000, 0, 'bot-surveybot', NULL, 'surveybot@localhost', false, '', 'Surveybot', '', 'system_user', 'en', false);
