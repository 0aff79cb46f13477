pub mod check;
pub mod destroy;
pub mod exec;
pub mod set;
pub mod ubc;
