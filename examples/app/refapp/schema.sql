-- Schema of the reference application: four services that tcache was made for.

-- AI report service -------------------------------------------------------------
CREATE TABLE stores (
    id            integer PRIMARY KEY,
    name          text    NOT NULL,
    region        text    NOT NULL,
    -- bumped by every reset: a generation that started under an older epoch
    -- must not write its report back
    report_epoch  bigint  NOT NULL DEFAULT 0
);

CREATE TABLE store_sales (
    store_id   integer NOT NULL REFERENCES stores(id),
    day        integer NOT NULL,
    amount     numeric(12, 2) NOT NULL,
    refunds    integer NOT NULL,
    incidents  integer NOT NULL,
    PRIMARY KEY (store_id, day)
);

CREATE TABLE reports (
    store_id       integer PRIMARY KEY REFERENCES stores(id),
    body           text    NOT NULL,          -- the JSON exactly as cached
    generation_id  bigint  NOT NULL,
    epoch          bigint  NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- every slow computation (AI generation, permission load, persona render, voice API call)
CREATE TABLE computations (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    subject      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    outcome      text NOT NULL DEFAULT 'running'
);
CREATE INDEX computations_kind_subject ON computations (kind, subject);

-- the race: the same report read from PostgreSQL and from tcache at once
CREATE TABLE race_log (
    id        bigserial PRIMARY KEY,
    store_id  integer NOT NULL,
    db_s      double precision NOT NULL,
    cache_s   double precision NOT NULL,
    db_found     boolean NOT NULL,
    cache_found  boolean NOT NULL,
    winner    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- what the application did to the cache (resets, role changes, ...), for the dashboard
CREATE TABLE app_events (
    id       bigserial PRIMARY KEY,
    kind     text NOT NULL,
    subject  text NOT NULL,
    detail   text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- permission service: roles and permissions of a user are a JOIN over four tables ---
CREATE TABLE users (
    id    integer PRIMARY KEY,
    name  text NOT NULL
);
CREATE TABLE roles (
    id    integer PRIMARY KEY,
    name  text NOT NULL UNIQUE
);
CREATE TABLE permissions (
    id    integer PRIMARY KEY,
    name  text NOT NULL UNIQUE
);
CREATE TABLE user_roles (
    user_id  integer NOT NULL REFERENCES users(id),
    role_id  integer NOT NULL REFERENCES roles(id),
    PRIMARY KEY (user_id, role_id)
);
CREATE TABLE role_permissions (
    role_id        integer NOT NULL REFERENCES roles(id),
    permission_id  integer NOT NULL REFERENCES permissions(id),
    PRIMARY KEY (role_id, permission_id)
);
CREATE INDEX role_permissions_role ON role_permissions (role_id);

-- persona/content service -------------------------------------------------------
CREATE TABLE personas (
    lang     text    NOT NULL,
    id       integer NOT NULL,
    name     text    NOT NULL,
    prompt   text    NOT NULL,
    version  integer NOT NULL DEFAULT 1,
    PRIMARY KEY (lang, id)
);

-- voices catalogue: what the external TTS API would answer --------------------------
CREATE TABLE voices (
    id        integer PRIMARY KEY,
    provider  text    NOT NULL,
    name      text    NOT NULL,
    language  text    NOT NULL,
    gender    text    NOT NULL,
    version   integer NOT NULL DEFAULT 1
);
CREATE INDEX voices_provider ON voices (provider);
