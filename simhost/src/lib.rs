//! The simulated Xen host: `grant::sim`'s hypervisor service and the embedded xenstored,
//! wired together so that ordinary processes behave like domains on one Xen host.
//!
//! * The hypervisor's domain lifecycle drives xenstored: a guest process connecting fires
//!   `@introduceDomain`, its death or destruction fires `@releaseDomain`.
//! * Every process that joins (dom0 or guest) receives its xenstore connection from the
//!   hypervisor, as a real domain finds its xenstore ring set up by the domain builder; the
//!   connection speaks with that domain's identity and permissions.
//! * [`SimHost::create_domain`] plays the toolstack's part of `xl create`: the hypervisor
//!   domain plus the `/local/domain/<domid>` layout with libxl's permissions.
//!
//! A process finds the host through a directory holding both sockets
//! ([`HYPERVISOR_SOCKET`], [`XENSTORED_SOCKET`]); [`join`] connects to it.
#![forbid(unsafe_code)]

use grant::DomId;
use grant::sim::{Credentials, DomainConfig, DomainEvent, Hypervisor, HypervisorHandle, SimDomain, SimError, SimToken};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use xenstore::{Access, Client, Perm, ServerHandle, Xenstored, XsError};

/// File name of the hypervisor control socket inside the host directory.
pub const HYPERVISOR_SOCKET: &str = "hypervisor.sock";
/// File name of xenstored's (privileged, dom0) unix socket inside the host directory.
pub const XENSTORED_SOCKET: &str = "xenstored.sock";
/// Environment variable naming the host directory for child processes.
pub const ENV_SIM_DIR: &str = "NETBACK_SIM_DIR";
/// Environment variable carrying a guest's one-time token for child processes.
pub const ENV_SIM_TOKEN: &str = "NETBACK_SIM_TOKEN";

/// Failures starting, joining or driving the simulated host.
#[derive(Debug, thiserror::Error)]
pub enum SimHostError {
    /// Creating the host directory failed.
    #[error("creating the sim host directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Starting the hypervisor service failed.
    #[error("starting the sim hypervisor")]
    StartHypervisor(#[source] SimError),
    /// Starting xenstored failed.
    #[error("starting xenstored on {path}")]
    StartXenstored {
        /// Its socket.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the hypervisor failed.
    #[error("joining the sim host at {dir} (is `nbctl sim` or a test host running?)")]
    Join {
        /// The host directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: SimError,
    },
    /// The hypervisor handed over no xenstore connection.
    #[error("the sim host gave domain {domid} no xenstore connection")]
    NoXenstore {
        /// The joining domain.
        domid: DomId,
    },
    /// Opening the xenstore client failed.
    #[error("opening xenstore for domain {domid}")]
    OpenXenstore {
        /// The joining domain.
        domid: DomId,
        /// Cause.
        #[source]
        source: XsError,
    },
    /// Creating a guest domain failed.
    #[error("creating a guest domain")]
    CreateDomain(#[source] SimError),
    /// Destroying a guest domain failed.
    #[error("destroying domain {domid}")]
    DestroyDomain {
        /// The domain.
        domid: DomId,
        /// Cause.
        #[source]
        source: SimError,
    },
    /// Writing the toolstack's xenstore layout failed.
    #[error("writing the xenstore layout of domain {domid}")]
    Layout {
        /// The domain.
        domid: DomId,
        /// Cause.
        #[source]
        source: XsError,
    },
    /// A required environment variable is missing or malformed.
    #[error("environment variable {name}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// What a freshly created guest's process needs to join the host.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The guest's domain id.
    pub domid: DomId,
    /// Its name in xenstore.
    pub name: String,
    /// The one-time token its process connects with.
    pub token: SimToken,
    /// The host directory.
    pub dir: PathBuf,
}

impl GuestSpec {
    /// Environment variables that let a child process [`join_from_env`] as this guest.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [(ENV_SIM_DIR, self.dir.display().to_string()), (ENV_SIM_TOKEN, self.token.to_string())]
    }
}

/// A running simulated host. Dropping it stops both services and removes the directory
/// if the host created it.
#[derive(Debug)]
pub struct SimHost {
    dir: PathBuf,
    remove_dir: bool,
    hypervisor: Option<HypervisorHandle>,
    xenstored: Arc<Xenstored>,
    xs_server: Option<ServerHandle>,
    toolstack: Client,
}

impl SimHost {
    /// Starts a host in a fresh directory under the system temporary directory.
    pub fn start_temp() -> Result<Self, SimHostError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netback-sim-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut host = Self::start(&dir)?;
        host.remove_dir = true;
        Ok(host)
    }

    /// Starts a host whose sockets live in `dir` (created if missing).
    pub fn start(dir: &Path) -> Result<Self, SimHostError> {
        std::fs::create_dir_all(dir).map_err(|source| SimHostError::CreateDir { path: dir.into(), source })?;
        let xenstored = Xenstored::new();
        let xs_path = dir.join(XENSTORED_SOCKET);
        let xs_server = xenstored
            .serve_unix(&xs_path)
            .map_err(|source| SimHostError::StartXenstored { path: xs_path.clone(), source })?;

        let hypervisor = Hypervisor::new().map_err(SimHostError::StartHypervisor)?;
        let store = xenstored.clone();
        hypervisor.set_domain_event_hook(move |event| match event {
            DomainEvent::Introduced(domid) => {
                store.introduce_domain(domid);
            }
            DomainEvent::Released(domid) => {
                store.release_domain(domid);
            }
        });
        let store = xenstored.clone();
        hypervisor.set_xenstore_connector(move |domid| {
            let (ours, theirs) = UnixStream::pair()?;
            store.add_connection(ours, domid)?;
            Ok(theirs)
        });
        let handle = hypervisor.serve(dir.join(HYPERVISOR_SOCKET)).map_err(SimHostError::StartHypervisor)?;
        let toolstack = xenstored.connect(0).map_err(|source| SimHostError::OpenXenstore { domid: 0, source })?;
        tracing::info!(dir = %dir.display(), "sim host up");
        Ok(Self {
            dir: dir.to_path_buf(),
            remove_dir: false,
            hypervisor: Some(handle),
            xenstored,
            xs_server: Some(xs_server),
            toolstack,
        })
    }

    /// The directory holding the host's sockets.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The embedded xenstored.
    pub fn xenstored(&self) -> &Arc<Xenstored> {
        &self.xenstored
    }

    /// xenstored's listener on [`XENSTORED_SOCKET`]: [`ServerHandle::pause`] and
    /// [`ServerHandle::resume`] take xenstored down for dom0 processes and bring it back
    /// (cut their live connections with [`Xenstored::drop_connection`]).
    pub fn xenstored_listener(&self) -> &ServerHandle {
        self.xs_server.as_ref().expect("the listener lives until drop")
    }

    /// A privileged xenstore client living in the host process (the toolstack's).
    pub fn toolstack(&self) -> &Client {
        &self.toolstack
    }

    /// The hypervisor service.
    pub fn hypervisor(&self) -> &Hypervisor {
        self.hypervisor.as_ref().expect("hypervisor lives until drop").hypervisor()
    }

    /// Creates a guest the way `xl create` does before any device: the hypervisor domain,
    /// then `/local/domain/<domid>` (dom0-owned, guest-readable) with `name` and `domid`,
    /// and the guest-owned `device`, `data`, `control` and `error` directories; and introduces
    /// the domain to xenstored (`@introduceDomain`), as libxl does while building it.
    pub fn create_domain(&self, name: &str, config: DomainConfig) -> Result<GuestSpec, SimHostError> {
        let (domid, token) = self.hypervisor().create_domain(config).map_err(SimHostError::CreateDomain)?;
        if let Err(source) = write_domain_layout(&self.toolstack, domid, name) {
            let _ = self.hypervisor().destroy_domain(domid);
            return Err(SimHostError::Layout { domid, source });
        }
        // libxl introduces a domain to xenstored while building it, before any device and
        // before the guest runs, so backends see it alive from the start.
        self.xenstored.introduce_domain(domid);
        Ok(GuestSpec { domid, name: name.to_string(), token, dir: self.dir.clone() })
    }

    /// Destroys a guest (its process is disconnected, `@releaseDomain` fires) and removes
    /// its `/local/domain/<domid>` tree, as the toolstack does after `xl destroy`.
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), SimHostError> {
        self.hypervisor().destroy_domain(domid).map_err(|source| SimHostError::DestroyDomain { domid, source })?;
        match self.toolstack.rm(&format!("/local/domain/{domid}")) {
            Err(e) if !e.is_enoent() => Err(SimHostError::Layout { domid, source: e }),
            _ => Ok(()),
        }
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        if let Some(hv) = self.hypervisor.take() {
            hv.shutdown();
        }
        if let Some(xs) = self.xs_server.take() {
            xs.shutdown();
        }
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A process's membership of the host: its hypervisor handle and its xenstore connection.
#[derive(Debug, Clone)]
pub struct Session {
    /// Grant tables and event channels as this domain.
    pub domain: SimDomain,
    /// xenstore, with this domain's identity.
    pub xenstore: Client,
}

impl Session {
    /// This process's domain id.
    pub fn domid(&self) -> DomId {
        self.domain.domid()
    }
}

/// Writes `/local/domain/<domid>` as libxl does for a new domain: dom0-owned and readable
/// by the guest, with `name` and `domid`, and the guest-owned `device`, `data`, `control`
/// and `error` directories. One transaction.
pub fn write_domain_layout(toolstack: &Client, domid: DomId, name: &str) -> Result<(), XsError> {
    toolstack.transaction(|tx| {
        let home = format!("/local/domain/{domid}");
        let read_only = [Perm { domid: 0, access: Access::None }, Perm { domid, access: Access::Read }];
        let guest_owned = [Perm { domid, access: Access::None }];
        tx.mkdir(&home)?;
        tx.set_perms(&home, &read_only)?;
        tx.write(&format!("{home}/name"), name)?;
        tx.write(&format!("{home}/domid"), domid.to_string())?;
        for dir in ["device", "data", "control", "error"] {
            let path = format!("{home}/{dir}");
            tx.mkdir(&path)?;
            tx.set_perms(&path, &guest_owned)?;
        }
        Ok(())
    })
}

/// A new privileged (dom0) xenstore connection to the host in `dir`, through xenstored's
/// unix socket, as a dom0 process on Xen opens one: what a dom0 daemon whose connection
/// was lost reconnects with. Connections on that socket speak as dom0, the identity
/// [`join`] gives a dom0 process.
pub fn connect_dom0_xenstore(dir: &Path) -> Result<Client, XsError> {
    Client::connect(&dir.join(XENSTORED_SOCKET))
}

/// Joins the host in `dir` as `who`.
pub fn join(dir: &Path, who: Credentials) -> Result<Session, SimHostError> {
    let domain = SimDomain::connect(dir.join(HYPERVISOR_SOCKET), who)
        .map_err(|source| SimHostError::Join { dir: dir.into(), source })?;
    let domid = domain.domid();
    let stream = domain.take_xenstore_stream().ok_or(SimHostError::NoXenstore { domid })?;
    let xenstore = Client::from_stream(stream).map_err(|source| SimHostError::OpenXenstore { domid, source })?;
    Ok(Session { domain, xenstore })
}

/// Joins the host named by [`ENV_SIM_DIR`], as the guest whose token is in
/// [`ENV_SIM_TOKEN`], or as dom0 when no token is set.
pub fn join_from_env() -> Result<Session, SimHostError> {
    let dir = std::env::var_os(ENV_SIM_DIR).ok_or(SimHostError::Env { name: ENV_SIM_DIR, reason: "not set".into() })?;
    let who = match std::env::var(ENV_SIM_TOKEN) {
        Ok(token) => Credentials::Guest {
            token: token
                .parse()
                .map_err(|e: SimError| SimHostError::Env { name: ENV_SIM_TOKEN, reason: e.to_string() })?,
        },
        Err(std::env::VarError::NotPresent) => Credentials::Dom0,
        Err(e) => return Err(SimHostError::Env { name: ENV_SIM_TOKEN, reason: e.to_string() }),
    };
    join(Path::new(&dir), who)
}
