pub mod auth;
pub mod config;
pub mod intake;
pub mod observe;
pub mod policy;
pub mod spool;
