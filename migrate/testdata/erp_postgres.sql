-- The FastAPI ERP from the field report: PostgreSQL, tables in their own
-- schema `erp`, a uuid key, a mixed-case table and mixed-case columns
-- (SQLAlchemy models with quoted names), 2FA settings next to the password
-- hash, and other tables that reference the users table.
CREATE SCHEMA "erp";
CREATE TABLE "erp"."departments" (
    "id" serial PRIMARY KEY,
    "code" varchar(16) NOT NULL UNIQUE,
    "name" text NOT NULL
);
CREATE TABLE "erp"."AppUser" (
    "id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "userName" varchar(64) NOT NULL,
    "Email" varchar(320) NOT NULL,
    "fullName" text,
    "hashed_password" varchar(1024),
    "is_active" boolean NOT NULL DEFAULT true,
    "is_superuser" boolean NOT NULL DEFAULT false,
    "totpSecret" varchar(64),
    "totpEnabled" boolean NOT NULL DEFAULT false,
    "departmentId" integer REFERENCES "erp"."departments" ("id"),
    "createdAt" timestamptz NOT NULL DEFAULT now(),
    "updatedAt" timestamptz
);
CREATE UNIQUE INDEX "ix_AppUser_userName" ON "erp"."AppUser" ("userName");
CREATE UNIQUE INDEX "ix_AppUser_email_lower" ON "erp"."AppUser" (lower("Email"));
CREATE TABLE "erp"."audit_log" (
    "id" bigserial PRIMARY KEY,
    "user_id" uuid REFERENCES "erp"."AppUser" ("id") ON DELETE SET NULL,
    "action" text NOT NULL,
    "at" timestamptz NOT NULL DEFAULT now()
);

INSERT INTO "erp"."departments" ("code", "name") VALUES ('PRD', 'Production'), ('QA', 'Quality'), ('FIN', 'Finance');
INSERT INTO "erp"."AppUser" ("id", "userName", "Email", "fullName", "hashed_password", "is_superuser", "totpSecret", "totpEnabled", "departmentId") VALUES
('0b6f2c52-4a8e-4d3a-9f5e-1c2d3e4f5a6b', 'o.yilmaz',  'O.Yilmaz@corp.example',  'Oğuz Yılmaz',   '$argon2id$v=19$m=65536,t=3,p=4$nGiPhKZVlxMMy2MKmP4dyA$KsrRPNM8Rg8R4JhAmeosyJ1TzvBXqqLCDvpSSOnV5Tc', true,  'JBSWY3DPEHPK3PXP', true,  1),
('f3a1b2c3-d4e5-4f60-8172-93a4b5c6d7e8', 'm.schmidt', 'm.schmidt@corp.example', 'Maria Schmidt', '$argon2id$v=19$m=65536,t=3,p=4$YqkQBWWgmvIfkvpjgW6WUw$aDaRjgpHsT9C+6g/GDezuh56DP5k7puO3ikO0/8Fay8', false, 'KRSXG5CTMVRXEZLU', true,  2),
('7c9e6679-7425-40de-944b-e07fc1f90ae7', 'a.öztürk',  'a.ozturk@corp.example',  'Ayşe Öztürk',   '$argon2id$v=19$m=65536,t=3,p=4$/CQMLr28fOXLR3DE55ZCtA$K/w+T92McgcVHRZApR1lAJKc6pdPsVnPDVJH/ceTNrw', false, NULL, false, 1),
('2d4e6f80-1a3b-4c5d-8e9f-a0b1c2d3e4f5', 'j.doe',     'j.doe@corp.example',     'John Doe',      '$argon2id$v=19$m=65536,t=3,p=4$IQ+Ifcc1DyYWx6CvVzOOug$phmwYUOzFUKoWt6ZHR3X2B4xDs5+tGAg1/UihunfTIY', false, NULL, false, 3),
('a8098c1a-f86e-41e1-9ad6-123456789abc', 'k.tanaka',  'k.tanaka@corp.example',  '田中 健',        '$2b$12$/RZap1tfVf7fffqLbmA8seakO36cJehpf5ZBlZI0jVscgEIXQD1J6', false, 'GEZDGNBVGY3TQOJQ', true, 2),
('e1f2a3b4-c5d6-4e7f-8091-a2b3c4d5e6f7', 'p.rossi',   'p.rossi@corp.example',   'Paolo Rossi',   '$2b$12$qinX3ua48OA3Ago8ax9UOe3AQ5SqxssAwBX84LRC7S7hYandOsm66', false, NULL, false, 3),
-- an SSO-only account: no password hash at all
('11111111-2222-4333-8444-555555555555', 'svc.mes',   'mes@corp.example',       'MES integration', NULL, false, NULL, false, 1);
INSERT INTO "erp"."audit_log" ("user_id", "action") VALUES ('0b6f2c52-4a8e-4d3a-9f5e-1c2d3e4f5a6b', 'login'), ('f3a1b2c3-d4e5-4f60-8172-93a4b5c6d7e8', 'export_invoices');
