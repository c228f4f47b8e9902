//! The decision half of Linux's `frontend_changed` / `set_backend_state`, as a pure
//! function: from what xenstore says now (and what we last wrote) to the one step to take.
//! Every watch event re-runs it, so each answer must be idempotent: when the vif is already
//! where the inputs say it should be, the answer is [`Step::Nothing`].

use super::XenbusState;

/// The frontend's `state` node as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendState {
    /// Missing, empty or not a number (Linux reads these as `XenbusStateUnknown`).
    Missing,
    /// A state of `enum xenbus_state`.
    Known(XenbusState),
    /// A number that is no state at all.
    OutOfRange(u32),
}

impl FrontendState {
    /// Decodes the value of a `state` node (`None`: the node is missing).
    pub fn parse(value: Option<&str>) -> Self {
        match value.and_then(|v| v.trim().parse::<u32>().ok()) {
            None => FrontendState::Missing,
            Some(n) => XenbusState::parse(&n.to_string()).map_or(FrontendState::OutOfRange(n), FrontendState::Known),
        }
    }

    /// The number to report, `None` when missing.
    pub fn number(self) -> Option<u32> {
        match self {
            FrontendState::Missing => None,
            FrontendState::Known(s) => Some(s as u32),
            FrontendState::OutOfRange(n) => Some(n),
        }
    }
}

/// The hotplug gate: a backend directory with a `script` node waits for the script's
/// `hotplug-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hotplug {
    /// No `script` node: nothing to wait for.
    NoScript,
    /// A script, and no verdict yet.
    Waiting,
    /// `hotplug-status = connected`.
    Connected,
    /// `hotplug-status = error`.
    Failed,
}

impl Hotplug {
    /// From the presence of `script` and the value of `hotplug-status`.
    pub fn from_nodes(script: bool, status: Option<&str>) -> Self {
        match (script, status.map(str::trim)) {
            (false, _) => Hotplug::NoScript,
            (true, Some("connected")) => Hotplug::Connected,
            (true, Some("error")) => Hotplug::Failed,
            (true, _) => Hotplug::Waiting,
        }
    }
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// The state we last wrote.
    pub ours: XenbusState,
    /// Whether the data path (worker + switch port) is running.
    pub running: bool,
    /// The frontend's state.
    pub frontend: FrontendState,
    /// The backend's `online` node is not `0` (the toolstack has not detached the vif).
    pub online: bool,
    /// The hotplug gate.
    pub hotplug: Hotplug,
    /// Our `state` node as read (the toolstack writes Closing there when it detaches).
    pub published: Option<XenbusState>,
}

/// The step to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Already where we should be.
    Nothing,
    /// Read the frontend's keys, connect and start the data path (we stay InitWait; the
    /// next evaluation passes the hotplug gate).
    Connect,
    /// The data path runs and the hotplug gate is open: write Connected.
    GoConnected,
    /// Stop the data path (if running) and write this state.
    Disconnect(XenbusState),
    /// The toolstack detached the vif: stop, write Closed, stop watching the frontend.
    Detach,
    /// Disable the vif: error node, stop, Closing.
    Fatal(String),
}

/// Decides the next step (Linux `frontend_changed`, plus the hotplug gate and the
/// toolstack's `online=0` detach).
pub fn decide(i: Inputs) -> Step {
    use XenbusState::*;
    let settled = |want: XenbusState| i.ours == want && !i.running;
    let disconnect = |want| if settled(want) { Step::Nothing } else { Step::Disconnect(want) };
    let state = match i.frontend {
        FrontendState::Missing => Unknown,
        FrontendState::Known(s) => s,
        FrontendState::OutOfRange(n) => return fatal_state(i, n),
    };
    if !i.online && matches!(state, Unknown | Initialising | InitWait | Closed) {
        // Detached and the frontend is not using the rings: nothing to wait for.
        let done = settled(Closed) && i.published == Some(Closed);
        return if done { Step::Nothing } else { Step::Detach };
    }
    match state {
        Unknown | Closed => disconnect(Closed),
        Closing => disconnect(Closing),
        Initialised => Step::Nothing,
        // A detached vif never reconnects.
        Initialising if !i.online => Step::Nothing,
        // A frontend saying Initialising has restarted, even if we never saw the Closed it
        // passed through (watches report the current value, and it may have moved on):
        // from Closing too, as Linux's Closing → Closed → InitWait.
        Initialising if matches!(i.ours, Closed | Closing | Connected) || i.running => Step::Disconnect(InitWait),
        Initialising => Step::Nothing,
        Connected if i.ours == InitWait && !i.running && i.online => Step::Connect,
        Connected if i.ours == InitWait && i.running => match i.hotplug {
            Hotplug::NoScript | Hotplug::Connected => Step::GoConnected,
            Hotplug::Waiting => Step::Nothing,
            Hotplug::Failed => Step::Fatal("hotplug script failed (hotplug-status = error)".into()),
        },
        Connected => Step::Nothing,
        InitWait | Reconfiguring | Reconfigured => fatal_state(i, state as u32),
    }
}

/// Linux's `xenbus_dev_fatal(dev, -EINVAL, "saw state %d at frontend")`, once.
fn fatal_state(i: Inputs, n: u32) -> Step {
    if i.ours == XenbusState::Closing && !i.running {
        Step::Nothing
    } else {
        Step::Fatal(format!("saw state {n} at frontend"))
    }
}

#[cfg(test)]
mod tests {
    use super::XenbusState::*;
    use super::*;

    fn inputs(ours: XenbusState, running: bool, fe: XenbusState) -> Inputs {
        let frontend = FrontendState::Known(fe);
        Inputs { ours, running, frontend, online: true, hotplug: Hotplug::NoScript, published: Some(ours) }
    }

    #[test]
    fn parses_frontend_state() {
        assert_eq!(FrontendState::parse(None), FrontendState::Missing);
        assert_eq!(FrontendState::parse(Some("junk")), FrontendState::Missing);
        assert_eq!(FrontendState::parse(Some("4")), FrontendState::Known(Connected));
        assert_eq!(FrontendState::parse(Some(" 1\n")), FrontendState::Known(Initialising));
        assert_eq!(FrontendState::parse(Some("12")), FrontendState::OutOfRange(12));
        assert_eq!(FrontendState::OutOfRange(12).number(), Some(12));
        assert_eq!(FrontendState::Missing.number(), None);
    }

    #[test]
    fn hotplug_gate_from_nodes() {
        assert_eq!(Hotplug::from_nodes(false, Some("error")), Hotplug::NoScript);
        assert_eq!(Hotplug::from_nodes(true, None), Hotplug::Waiting);
        assert_eq!(Hotplug::from_nodes(true, Some("")), Hotplug::Waiting);
        assert_eq!(Hotplug::from_nodes(true, Some("connected")), Hotplug::Connected);
        assert_eq!(Hotplug::from_nodes(true, Some("error")), Hotplug::Failed);
    }

    #[test]
    fn handshake_to_connected() {
        assert_eq!(decide(inputs(InitWait, false, Initialising)), Step::Nothing);
        assert_eq!(decide(inputs(InitWait, false, Initialised)), Step::Nothing);
        assert_eq!(decide(inputs(InitWait, false, Connected)), Step::Connect);
        assert_eq!(decide(inputs(InitWait, true, Connected)), Step::GoConnected);
        assert_eq!(decide(inputs(Connected, true, Connected)), Step::Nothing);
    }

    #[test]
    fn hotplug_gate_holds_connected_back() {
        let mut i = inputs(InitWait, true, Connected);
        i.hotplug = Hotplug::Waiting;
        assert_eq!(decide(i), Step::Nothing);
        i.hotplug = Hotplug::Connected;
        assert_eq!(decide(i), Step::GoConnected);
        i.hotplug = Hotplug::Failed;
        assert!(matches!(decide(i), Step::Fatal(m) if m.contains("hotplug")));
    }

    #[test]
    fn frontend_closing_and_closed_tear_down_once() {
        assert_eq!(decide(inputs(Connected, true, Closing)), Step::Disconnect(Closing));
        assert_eq!(decide(inputs(Closing, false, Closing)), Step::Nothing);
        assert_eq!(decide(inputs(Closing, false, Closed)), Step::Disconnect(Closed));
        assert_eq!(decide(inputs(Closed, false, Closed)), Step::Nothing);
        assert_eq!(decide(inputs(Connected, true, Unknown)), Step::Disconnect(Closed));
        let missing = Inputs { frontend: FrontendState::Missing, ..inputs(InitWait, false, Unknown) };
        assert_eq!(decide(missing), Step::Disconnect(Closed));
    }

    #[test]
    fn frontend_restart_reconnects() {
        assert_eq!(decide(inputs(Closed, false, Initialising)), Step::Disconnect(InitWait));
        assert_eq!(decide(inputs(Connected, true, Initialising)), Step::Disconnect(InitWait));
        assert_eq!(decide(inputs(InitWait, true, Initialising)), Step::Disconnect(InitWait));
        // Closing (disabled, or closing) and the frontend already restarted: its Closed was
        // missed, so reconnect rather than wait for a Closed that will not come.
        assert_eq!(decide(inputs(Closing, false, Initialising)), Step::Disconnect(InitWait));
        // Connected while closed needs a fresh Initialising first.
        assert_eq!(decide(inputs(Closed, false, Connected)), Step::Nothing);
        assert_eq!(decide(inputs(Closing, false, Connected)), Step::Nothing);
    }

    #[test]
    fn unexpected_frontend_states_are_fatal_once() {
        for fe in [InitWait, Reconfiguring, Reconfigured] {
            assert!(
                matches!(decide(inputs(Connected, true, fe)), Step::Fatal(m) if m == format!("saw state {} at frontend", fe as u32))
            );
            assert_eq!(decide(inputs(Closing, false, fe)), Step::Nothing);
        }
        let out = Inputs { frontend: FrontendState::OutOfRange(42), ..inputs(InitWait, false, Unknown) };
        assert_eq!(decide(out), Step::Fatal("saw state 42 at frontend".into()));
    }

    #[test]
    fn detach_closes_at_once_unless_the_frontend_uses_the_rings() {
        let off = |ours, running, fe| Inputs { online: false, ..inputs(ours, running, fe) };
        for fe in [Unknown, Initialising, InitWait, Closed] {
            assert_eq!(decide(off(InitWait, false, fe)), Step::Detach, "{fe}");
            assert_eq!(decide(off(Closed, false, fe)), Step::Nothing, "{fe}");
            // The toolstack overwrote our Closed with Closing: write it again.
            let overwritten = Inputs { published: Some(Closing), ..off(Closed, false, fe) };
            assert_eq!(decide(overwritten), Step::Detach, "{fe}");
        }
        assert_eq!(decide(off(Connected, true, Connected)), Step::Nothing);
        assert_eq!(decide(off(InitWait, false, Connected)), Step::Nothing);
        assert_eq!(decide(off(Connected, true, Closing)), Step::Disconnect(Closing));
        assert_eq!(decide(off(Closing, false, Closed)), Step::Detach);
        let gone = Inputs { frontend: FrontendState::Missing, ..off(Connected, true, Unknown) };
        assert_eq!(decide(gone), Step::Detach);
    }
}
