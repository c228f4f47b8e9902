//! Every vif's live [`Knobs`] and the defaults new vifs start from, under one lock, so a
//! control `Set` for all vifs and a vif's probe cannot miss each other. Also the backend
//! directory's `netback-knobs/<name>` nodes, read at every connect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use xenstore::Client;

use super::status::lock;
use crate::control::{Response, VifKnobs};
use crate::vif::{KnobValues, Knobs, PartialKnobs, VifId};

/// The directory, under a vif's backend directory, whose nodes set its knobs at connect.
pub const KNOBS_DIR: &str = "netback-knobs";

#[derive(Debug)]
struct Inner {
    defaults: KnobValues,
    vifs: BTreeMap<VifId, Arc<Knobs>>,
}

/// Shared by the xenstore thread (probe, forget) and the control socket (`Set`, reports).
#[derive(Debug, Clone)]
pub(super) struct KnobRegistry(Arc<Mutex<Inner>>);

impl KnobRegistry {
    pub fn new(defaults: KnobValues) -> Self {
        Self(Arc::new(Mutex::new(Inner { defaults, vifs: BTreeMap::new() })))
    }

    /// The knobs of `id`, created from the defaults if it has none yet.
    pub fn vif(&self, id: VifId) -> Arc<Knobs> {
        let mut inner = lock(&self.0);
        let defaults = inner.defaults;
        inner.vifs.entry(id).or_insert_with(|| Arc::new(Knobs::new(defaults))).clone()
    }

    /// Forgets a removed vif.
    pub fn forget(&self, id: VifId) {
        lock(&self.0).vifs.remove(&id);
    }

    /// The current values of `id`, if known.
    pub fn values(&self, id: VifId) -> Option<KnobValues> {
        lock(&self.0).vifs.get(&id).map(|k| k.get())
    }

    /// The control `Set`: one vif, or (`None`) the defaults and every vif. Validated for
    /// every target first: either all change or none.
    pub fn set(&self, vif: Option<VifId>, change: &PartialKnobs) -> Response {
        let mut inner = lock(&self.0);
        let targets: Vec<(VifId, Arc<Knobs>)> = match vif {
            Some(id) => match inner.vifs.get(&id) {
                Some(k) => vec![(id, k.clone())],
                None => return Response::Error { message: format!("no vif {id}") },
            },
            None => inner.vifs.iter().map(|(id, k)| (*id, k.clone())).collect(),
        };
        let mut check = targets.iter().map(|(_, k)| k.get().with(change)).collect::<Vec<_>>();
        if vif.is_none() {
            check.push(inner.defaults.with(change));
        }
        if let Some(e) = check.iter().find_map(|v| v.validate().err()) {
            return Response::Error { message: format!("invalid knobs: {e}") };
        }
        if vif.is_none() {
            inner.defaults = inner.defaults.with(change);
        }
        let mut vifs = Vec::new();
        for (id, knobs) in targets {
            match knobs.apply(change) {
                Ok(values) => vifs.push(VifKnobs { id, knobs: values }),
                Err(e) => return Response::Error { message: format!("{id}: invalid knobs: {e}") },
            }
        }
        tracing::info!(?vif, ?change, "knobs set");
        Response::Knobs { defaults: inner.defaults, vifs }
    }

    /// The defaults for new vifs.
    pub fn defaults(&self) -> KnobValues {
        lock(&self.0).defaults
    }
}

/// Reads `<backend>/netback-knobs/*`; unknown names and bad values are logged and skipped.
pub(super) fn read_backend_knobs(xs: &Client, backend: &str, id: VifId) -> PartialKnobs {
    let dir = format!("{backend}/{KNOBS_DIR}");
    let mut knobs = PartialKnobs::default();
    let names = match xs.directory(&dir) {
        Ok(names) => names,
        Err(e) if e.is_enoent() => return knobs,
        Err(e) => {
            tracing::warn!(error = %e, "{id}: listing {dir}");
            return knobs;
        }
    };
    for name in names {
        let path = format!("{dir}/{name}");
        match xs.read_string(&path) {
            Ok(value) => {
                if let Err(e) = knobs.set_named(&name, &value) {
                    tracing::warn!("{id}: ignoring {path}: {e}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "{id}: reading {path}"),
        }
    }
    knobs
}
