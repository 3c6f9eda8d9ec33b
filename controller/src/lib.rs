//! vnet network controller: networks and members, IP pools and routes, the
//! config each member gets, a crash-safe store under the node's home, and a
//! ZeroTier-compatible REST API (`/controller/...`).
//!
//! - [`model`]: [`Network`] and [`Member`] and their JSON form;
//! - [`update`]: partial updates from JSON, checked whole ([`FieldError`]);
//! - [`assign`]: automatic IPv4 assignment from the pools;
//! - [`store`]: where the state lives, as `controllerDbPath` says:
//!   [`sqlite_store`] (`HOME/controller.db`, the default; [`store_import`]
//!   moves an older home's files into it), [`file_store`]
//!   (`controller.d/network/<nwid>.json` and
//!   `.../<nwid>/member/<addr>.json`) or [`pg_store`]
//!   (PostgreSQL, schema by [`pg_migrations`], one active controller of
//!   several by [`controller_lease`]);
//! - [`join_keys`]: join keys (pre-auth keys), stored hashed;
//! - [`member_report`]: what a member's own request tells about it
//!   (identity pinned at first contact, versions, advertised routes);
//! - [`name_server`]: member names in DNS for networks with a domain;
//! - [`requesters`]: unauthorized requesters of private networks, in
//!   memory and bounded, until an admin acts on them;
//! - [`controller`]: [`Controller`], which ties them together and answers
//!   members' config requests ([`MemberConfig`], [`ConfigDenied`]);
//! - [`node_plugin`]: [`NodeController`], the controller as the node core's
//!   `NetworkController`, and [`plugin`] / [`factory`], which the service's
//!   `ServiceOptions::controller` takes;
//! - [`api`]: the REST routes (no auth of their own; the node's API adds it);
//! - [`web_ui`]: the web UI's static files under `/ui/`.
//! - [`controller_lock`]: locking the controller the packet path and the API share.

pub mod api;
pub mod assign;
pub mod controller;
pub mod controller_lease;
pub mod controller_lock;
pub mod file_store;
pub mod ip;
pub mod join_keys;
pub mod member_report;
pub mod model;
pub mod name_server;
pub mod node_plugin;
pub mod pg_migrations;
pub mod pg_store;
pub mod requesters;
pub mod sqlite_store;
pub mod store;
pub mod store_import;
pub mod update;
pub mod web_ui;

pub use assign::AssignError;
pub use controller::{ConfigDenied, Controller, ControllerCounters, ControllerError, MemberConfig};
pub use ip::Cidr;
pub use model::{IpPool, ManagedRouteSpec, Member, Network};
pub use node_plugin::{NodeController, factory, plugin};
pub use requesters::Requesters;
pub use store::{Store, StoreError, StoreSpec};
pub use update::FieldError;
