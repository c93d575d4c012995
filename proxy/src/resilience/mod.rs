//! Per-call resilience: deadlines, the retry budget and active health checks.
//! (Outlier ejection lives with the endpoint state it updates.)

pub mod deadline;
pub mod health;
pub mod retry_budget;
