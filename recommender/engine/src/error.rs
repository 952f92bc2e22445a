//! Errors of the cluster-view input.

/// A cluster view was refused. `path` names the object and field (`guests[3].mem_max_gb`), the
/// message says what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ViewError {
    /// Where in the document the problem is, e.g. `nodes[2].current.cpu`.
    pub path: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl ViewError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
