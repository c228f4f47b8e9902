//! `nbctl domain create|destroy`: guest domains on a running simulated host, the part of
//! `xl create` / `xl destroy` that comes before any device, so that a standalone `netback`
//! can be driven by hand with `nbctl attach` and `netfront-test`.

use anyhow::Context;
use grant::DomId;
use grant::sim::{Credentials, DomainConfig};
use simhost::{ENV_SIM_DIR, ENV_SIM_TOKEN};
use std::path::Path;

/// `nbctl domain …`.
#[derive(Debug, clap::Subcommand)]
pub enum DomainCommand {
    /// Create a guest domain. Prints (on stdout) the `export` line a guest process such as
    /// `netfront-test` joins the host with: `eval "$(nbctl domain create NAME)"`.
    Create {
        /// The domain's name (`/local/domain/<domid>/name`).
        name: String,
    },
    /// Destroy a guest domain: its process is cut off, `@releaseDomain` fires, and
    /// `/local/domain/<domid>` is removed.
    Destroy {
        /// The domain.
        domid: DomId,
    },
}

/// Runs `cmd` against the host in `dir`, as dom0.
pub fn run(dir: &Path, cmd: &DomainCommand) -> anyhow::Result<()> {
    let session = simhost::join(dir, Credentials::Dom0).context("joining the simulated host as dom0")?;
    match cmd {
        DomainCommand::Create { name } => {
            let (domid, token) = session.domain.create_domain(DomainConfig::default()).context("creating a domain")?;
            let written = simhost::write_domain_layout(&session.xenstore, domid, name)
                .and_then(|()| session.xenstore.introduce(domid, 0, 0));
            if let Err(e) = written {
                let _ = session.domain.destroy_domain(domid);
                return Err(e).with_context(|| format!("writing /local/domain/{domid}"));
            }
            eprintln!("created domain {domid} ({name}); its process joins with the variables below");
            println!("export {ENV_SIM_DIR}={} {ENV_SIM_TOKEN}={token}", dir.display());
        }
        DomainCommand::Destroy { domid } => {
            // A sim domain also dies with its process; the toolstack still cleans up after it.
            let gone_already = match session.domain.destroy_domain(*domid) {
                Ok(()) => false,
                Err(e) if e.errno() == nix::errno::Errno::ESRCH => true,
                Err(e) => return Err(e).with_context(|| format!("destroying domain {domid}")),
            };
            let home = format!("/local/domain/{domid}");
            if gone_already && !session.xenstore.exists(&home)? {
                anyhow::bail!("there is no domain {domid}");
            }
            match session.xenstore.rm(&home) {
                Err(e) if !e.is_enoent() => return Err(e).context("removing the domain's xenstore directory"),
                _ => {}
            }
            let how = if gone_already { "was already dead; removed its xenstore directory" } else { "destroyed" };
            println!("domain {domid} {how}");
        }
    }
    Ok(())
}
