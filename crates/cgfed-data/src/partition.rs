//! Sharing the training pool among clients.
//!
//! `iid`: shuffle the pool by the experiment seed ([`IID_STREAM`]) and cut it into
//! `num_clients` contiguous shards; the first `len % num_clients` shards get one example
//! more, so sizes differ by at most one. The label-aware methods (`dirichlet`, `by-field`,
//! `shards`) are in [`crate::partitioners`]; [`partition_labelled`] applies any of them to
//! examples with one label each.

use cgfed_core::{Error, Example, Result};

use crate::config::PartitionMethod;
use crate::partitioners::{assign, PartitionSpec};
use crate::shuffle::{rng, shuffle, IID_STREAM};

/// Split `pool` among `num_clients` clients with `method` (unlabelled examples: the
/// label-aware methods see a single label).
///
/// Errors: `num_clients == 0` (key `federation.clients`), or a client would get fewer than
/// `min_per_client` examples (key `data.min_examples_per_client`, or `federation.clients`
/// when the minimum is 1; the message names both and how to fix it).
pub fn partition(
    pool: Vec<Example>,
    method: PartitionMethod,
    num_clients: usize,
    min_per_client: usize,
    seed: u64,
) -> Result<Vec<Vec<Example>>> {
    match method {
        PartitionMethod::Iid => partition_iid(pool, num_clients, min_per_client, seed),
        _ => {
            let labels = vec![String::new(); pool.len()];
            let cfg = crate::DataConfig {
                partition: method,
                ..Default::default()
            };
            Ok(partition_labelled(
                pool,
                &labels,
                &spec_of(&cfg),
                num_clients,
                min_per_client,
                seed,
            )?
            .0)
        }
    }
}

/// Per client, the indices (into the pool) of the examples it got.
pub type Assignment = Vec<Vec<usize>>;

/// The [`PartitionSpec`] that `cfg`'s `partition`, `dirichlet_alpha` and
/// `shards_per_client` describe.
pub fn spec_of(cfg: &crate::DataConfig) -> PartitionSpec {
    match cfg.partition {
        PartitionMethod::Iid => PartitionSpec::Iid,
        PartitionMethod::Dirichlet => PartitionSpec::Dirichlet {
            alpha: cfg.dirichlet_alpha,
        },
        PartitionMethod::ByField => PartitionSpec::ByField,
        PartitionMethod::Shards => PartitionSpec::Shards {
            shards_per_client: cfg.shards_per_client,
        },
    }
}

/// Split `pool` (with `labels[i]` the label of `pool[i]`) among `num_clients` clients with
/// `spec`; also returns the indices each client got (into `pool`).
///
/// # Errors
/// As [`crate::partitioners::assign`].
pub fn partition_labelled(
    pool: Vec<Example>,
    labels: &[String],
    spec: &PartitionSpec,
    num_clients: usize,
    min_per_client: usize,
    seed: u64,
) -> Result<(Vec<Vec<Example>>, Assignment)> {
    let assignment = assign(labels, spec, num_clients, min_per_client, seed)?;
    let mut slots: Vec<Option<Example>> = pool.into_iter().map(Some).collect();
    let clients = assignment
        .iter()
        .map(|idx| {
            idx.iter()
                .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
                .collect()
        })
        .collect();
    Ok((clients, assignment))
}

/// The `iid` partition (see the module docs and [`partition`]).
pub fn partition_iid(
    mut pool: Vec<Example>,
    num_clients: usize,
    min_per_client: usize,
    seed: u64,
) -> Result<Vec<Vec<Example>>> {
    check_shard_sizes(pool.len(), num_clients, min_per_client)?;
    shuffle(&mut pool, &mut rng(seed, IID_STREAM));
    let mut rest = pool.into_iter();
    Ok(iid_shard_sizes(rest.len(), num_clients)
        .into_iter()
        .map(|size| rest.by_ref().take(size).collect())
        .collect())
}

/// Shard sizes of an `iid` partition of `n` examples: `n / num_clients`, plus one for the
/// first `n % num_clients` clients. Empty when `num_clients == 0`.
pub fn iid_shard_sizes(n: usize, num_clients: usize) -> Vec<usize> {
    if num_clients == 0 {
        return Vec::new();
    }
    let (base, extra) = (n / num_clients, n % num_clients);
    (0..num_clients)
        .map(|i| base + usize::from(i < extra))
        .collect()
}

/// Check that `n` examples give each of `num_clients` clients at least `min_per_client`.
fn check_shard_sizes(n: usize, num_clients: usize, min_per_client: usize) -> Result<()> {
    if num_clients == 0 {
        return Err(Error::config(
            "federation.clients",
            "must be at least 1 (there is no one to give the data to)",
        ));
    }
    let smallest = n / num_clients;
    if smallest >= min_per_client {
        return Ok(());
    }
    let key = if min_per_client > 1 {
        "data.min_examples_per_client"
    } else {
        "federation.clients"
    };
    Err(Error::config(
        key,
        format!(
            "{n} training examples shared among `federation.clients` = {num_clients} leave the \
             smallest client {smallest}, below `data.min_examples_per_client` = \
             {min_per_client}; lower either, or get more training examples (a longer text, a \
             smaller `data.seq_len` or `data.eval_fraction`, a larger `data.max_train_examples`)"
        ),
    ))
}
