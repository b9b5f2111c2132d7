//! HTTP integration tests: a real gateway per test, spoken to over real HTTP. One binary, so the
//! crate is linked once; the modules live in `tests/api/`.

mod common;

#[path = "api/admin_ops.rs"]
mod admin_ops;
#[path = "api/codec.rs"]
mod codec;
#[path = "api/crash.rs"]
mod crash;
#[path = "api/create.rs"]
mod create;
#[path = "api/failures.rs"]
mod failures;
#[path = "api/identity.rs"]
mod identity;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/listing.rs"]
mod listing;
#[path = "api/members.rs"]
mod members;
#[path = "api/multihash.rs"]
mod multihash;
#[path = "api/ops.rs"]
mod ops;
#[path = "api/ownership.rs"]
mod ownership;
#[path = "api/protection.rs"]
mod protection;
#[path = "api/quotas.rs"]
mod quotas;
#[path = "api/read.rs"]
mod read;
#[path = "api/remote.rs"]
mod remote;
#[path = "api/replicas.rs"]
mod replicas;
#[path = "api/s3.rs"]
mod s3;
#[path = "api/swift.rs"]
mod swift;
#[path = "api/update_delete.rs"]
mod update_delete;
#[path = "api/versions.rs"]
mod versions;
#[path = "api/wire.rs"]
mod wire;
