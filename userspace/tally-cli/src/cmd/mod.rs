pub mod check;
pub mod destroy;
pub mod events;
pub mod exec;
pub mod set;
pub mod ubc;
pub mod validate;
