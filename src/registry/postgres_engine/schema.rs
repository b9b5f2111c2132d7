//! The schema, as numbered migrations embedded in the binary. Each runs once, in its own
//! transaction, under an advisory lock so replicas starting together apply it once; the version
//! reached is kept in `glance_gateway_meta`.
//!
//! * `images`: one row per image ever stored (never deleted, so ids stay reserved). `doc` is the
//!   JSON of the [`StoredImage`](crate::registry::StoredImage) (type `json`, not `jsonb`: record
//!   strings may hold U+0000, which `jsonb` refuses); the other columns are extracted from it
//!   for the list indexes. String sort keys are `bytea` so they compare byte-wise, as the sled
//!   engine and `query::order` do, whatever the database's collation; `size_key` is the size
//!   with its top bit flipped, so a signed `bigint` sorts unsigned sizes.
//! * `members`: one row per membership, the index behind `shared_with` and tenant lists.
//! * `status_counts`, `usage`: the counters, changed in the image's transaction.
//! * `replicas`: each running gateway's lease; `images.saving_replica` names the replica whose
//!   upload an image in `saving` is.

/// `(version, SQL)`, in order.
pub const MIGRATIONS: &[(i64, &str)] = &[(1, V1)];

const V1: &str = r#"
CREATE TABLE images (
    id text COLLATE "C" PRIMARY KEY,
    doc json NOT NULL,
    status text COLLATE "C" NOT NULL,
    live boolean NOT NULL,
    is_public boolean NOT NULL,
    owner text COLLATE "C",
    name_key bytea NOT NULL,
    disk_format_key bytea NOT NULL,
    container_format_key bytea NOT NULL,
    size_key bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    saving_replica text
);
CREATE INDEX images_live_created ON images (created_at, id) WHERE live;
CREATE INDEX images_live_name ON images (name_key, created_at, id) WHERE live;
CREATE INDEX images_live_status ON images (status, created_at, id) WHERE live;
CREATE INDEX images_live_disk_format ON images (disk_format_key, created_at, id) WHERE live;
CREATE INDEX images_live_container_format
    ON images (container_format_key, created_at, id) WHERE live;
CREATE INDEX images_live_size ON images (size_key, created_at, id) WHERE live;
CREATE INDEX images_live_updated ON images (updated_at, created_at, id) WHERE live;
CREATE INDEX images_live_owner ON images (owner, created_at, id) WHERE live;
CREATE INDEX images_updated ON images (updated_at, created_at, id);
CREATE INDEX images_walked ON images (status, id) WHERE status IN ('saving', 'pending_delete');

CREATE TABLE members (
    image_id text COLLATE "C" NOT NULL REFERENCES images (id),
    member text COLLATE "C" NOT NULL,
    PRIMARY KEY (image_id, member)
);
CREATE INDEX members_by_member ON members (member, image_id);

CREATE TABLE status_counts (
    status text COLLATE "C" PRIMARY KEY,
    n bigint NOT NULL
);
INSERT INTO status_counts (status, n) VALUES
    ('queued', 0), ('saving', 0), ('active', 0), ('killed', 0), ('deleted', 0),
    ('pending_delete', 0), ('deactivated', 0);

CREATE TABLE usage (
    has_owner boolean NOT NULL,
    owner text COLLATE "C" NOT NULL,
    bytes numeric NOT NULL,
    PRIMARY KEY (has_owner, owner)
);

CREATE TABLE replicas (
    id text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
"#;

/// The meta table itself predates every migration.
pub const META: &str = "CREATE TABLE IF NOT EXISTS glance_gateway_meta \
     (key text PRIMARY KEY, value text NOT NULL)";

/// Advisory locks are per database: the keys hash the schema (migrations) or the registry id
/// (chores), so registries in different schemas of one database never wait for each other.
pub const LOCK_MIGRATE: &str =
    "SELECT pg_advisory_lock(hashtext('glance-gateway migrate ' || current_schema()))";
pub const TRY_LOCK_CHORE: &str =
    "SELECT pg_try_advisory_lock(hashtext('glance-gateway chore ' || $1::text || ' ' || $2::text))";
