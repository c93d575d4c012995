//! The webhook's integration tests, one module per area, linked as one
//! binary. `control_plane` runs against the real apiserver (one control
//! plane for the binary, see `ControlPlane::shared`); the others drive the
//! injection, the router and the TLS server in-process.

mod admin_args;
mod cert_files;
mod control_plane;
mod discovery_injection;
mod host_aliases;
mod http_handler;
mod mutate_fixtures;
mod proxy_image;
mod tls_server;
