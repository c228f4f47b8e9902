//! [`Chain`]: an error with its chain of causes on one line (`what: why: deeper why`), for
//! logs and for the `error` nodes, which must say why, not only what stopped.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, separated by `": "`.
pub(crate) struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;
    use crate::vif::DatapathError;

    #[test]
    fn every_cause_follows_on_one_line() {
        let inner = std::io::Error::other("req_prod 2560 impossible with req_cons 0");
        let error = DatapathError::Poll(inner);
        assert_eq!(Chain(&error).to_string(), "epoll: req_prod 2560 impossible with req_cons 0");
    }
}
