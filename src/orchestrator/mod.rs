//! The orchestrator side of the agent protocol: the endpoint agents dial, their sessions, and
//! the dispatch of invocations to them.

pub mod attempt;
pub mod dispatch;
pub mod endpoint;
pub mod framing;
pub mod services;
pub mod session;
pub mod usercode;
pub mod v1;

pub use endpoint::{AgentEvent, Endpoint, Sessions};
pub use session::{Completed, FollowUp, SessionError, SessionHandle};
