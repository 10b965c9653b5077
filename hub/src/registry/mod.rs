//! The identity registry: devices, their modules and how they authenticate, shared access
//! policies, CAs and settings, persisted in SQLite. The CLI and a running hub share the
//! file; in cluster mode it is the node's copy of the cluster's registry.
//!
//! The core, which the parts build on and which calls none of them:
//! - [`error`]: why an operation failed; [`model`]: what the registry holds, and a
//!   [`Change`] to it as the cluster's mirror carries it.
//! - [`schema`]: every table; [`store`]: the connection, its one way to write (through the
//!   mirror first), and settings; [`files`]: keeping the database's files owner-only.
//!
//! The parts, each a set of [`Registry`] methods over its tables:
//! - [`devices`], [`policies`], [`modules`] (`device/module` identities), [`x509`] (how a
//!   device authenticates, and the CAs its certificate may chain to).
//! - [`lifecycle`]: a device with what hangs off it — added with its X.509
//!   authentication, deleted with its modules and X.509 entry.
//! - [`sync`]: this database as a copy of the cluster's — changes applied from the mirror,
//!   and what the mirror no longer holds removed.
//! - [`live`]: the tables a running hub publishes for the CLI (presence, open streams,
//!   close requests), as rows; the hub's side, in memory, is [`crate::live`].

pub mod devices;
pub mod error;
pub mod files;
pub mod lifecycle;
pub mod live;
pub mod model;
pub mod modules;
pub mod policies;
pub mod schema;
pub mod store;
pub mod sync;
pub mod x509;

pub use error::RegistryError;
pub use files::{make_private, set_mode};
pub use model::{new_key, CaCert, Change, Device, DeviceAuth, Module, Policy, Right};
pub use modules::{split_identity, valid_identity};
pub use store::{Mirror, Registry, DB_FILE};
pub use sync::Present;
pub use x509::normalize_thumbprint;
