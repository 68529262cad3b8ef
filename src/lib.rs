pub mod auth;
pub mod config;
pub mod observe;
pub mod spool;
