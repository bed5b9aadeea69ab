//! Operating tenants' data from the command line: `state-service export`,
//! `import`, `purge` and `stats`, clients of `stateservice.v1.AdminService`,
//! and the backup file format they write and read (`format`). Nothing here
//! runs inside the server.

pub mod cli;
pub mod format;
