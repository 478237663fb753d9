//! Label-aware partitioners: coverage, determinism, IID compatibility, skew and errors.

use std::collections::BTreeMap;

use cgfed_core::{Error, Example};
use cgfed_data::partition::partition_iid;
use cgfed_data::partitioners::{
    assign, client_stats, mean_label_skew, total_variation, ClientStats, PartitionSpec,
};

/// `n` items over `num_labels` labels, scattered (item `i` gets a hashed label).
fn scattered(n: usize, num_labels: usize, salt: u64) -> Vec<String> {
    (0..n as u64)
        .map(|i| {
            let mut h = (i ^ salt.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
            format!("label{:02}", h % num_labels as u64)
        })
        .collect()
}

/// `n` items over `num_labels` labels, sorted and near-equal: label `i * L / n`.
fn sorted(n: usize, num_labels: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("label{:02}", i * num_labels / n))
        .collect()
}

fn config_key(err: &Error) -> &str {
    match err {
        Error::Config { key, .. } => key,
        other => panic!("not a config error: {other}"),
    }
}

fn all_specs() -> Vec<PartitionSpec> {
    vec![
        PartitionSpec::Iid,
        PartitionSpec::Dirichlet { alpha: 0.1 },
        PartitionSpec::Dirichlet { alpha: 1.0 },
        PartitionSpec::Dirichlet { alpha: 100.0 },
        PartitionSpec::ByField,
        PartitionSpec::Shards {
            shards_per_client: 1,
        },
        PartitionSpec::Shards {
            shards_per_client: 2,
        },
        PartitionSpec::Shards {
            shards_per_client: 5,
        },
    ]
}

/// Every index of `0..n` in exactly one client.
fn assert_exact_cover(clients: &[Vec<usize>], n: usize, what: &str) {
    let mut seen = vec![0u32; n];
    for &i in clients.iter().flatten() {
        assert!(i < n, "{what}: index {i} out of range");
        seen[i] += 1;
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "{what}: not an exact cover: {:?}",
        seen.iter()
            .enumerate()
            .filter(|(_, &c)| c != 1)
            .take(5)
            .collect::<Vec<_>>()
    );
}

#[test]
fn every_index_is_assigned_exactly_once() {
    let mut ok = 0;
    let mut errs = 0;
    for spec in all_specs() {
        for n in [1usize, 2, 20, 57, 200, 1001] {
            for num_labels in [1usize, 3, 10] {
                for num_clients in [1usize, 2, 5, 8] {
                    for min in [1usize, 3] {
                        for seed in 0..3u64 {
                            for labels in [scattered(n, num_labels, seed), sorted(n, num_labels)] {
                                let what = format!(
                                    "{spec:?} n={n} labels={num_labels} clients={num_clients} \
                                     min={min} seed={seed}"
                                );
                                match assign(&labels, &spec, num_clients, min, seed) {
                                    Ok(clients) => {
                                        ok += 1;
                                        assert_eq!(clients.len(), num_clients, "{what}");
                                        assert_exact_cover(&clients, n, &what);
                                        assert!(
                                            clients.iter().all(|c| c.len() >= min),
                                            "{what}: a client below the minimum"
                                        );
                                    }
                                    Err(err) => {
                                        errs += 1;
                                        let key = config_key(&err);
                                        assert!(
                                            [
                                                "federation.clients",
                                                "data.min_examples_per_client",
                                                "data.partition",
                                                "data.shards_per_client"
                                            ]
                                            .contains(&key),
                                            "{what}: {err}"
                                        );
                                        // iid fails only when the sizes cannot fit; the
                                        // others only on small pools
                                        if n / num_clients >= min {
                                            assert!(
                                                !matches!(spec, PartitionSpec::Iid),
                                                "{what}: {err}"
                                            );
                                            assert!(
                                                n < 200 || num_labels < num_clients,
                                                "{what}: {err}"
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // (about 4,400 ok and 2,500 errors, mostly pools of 1 or 2 items and `by_field` with
    // fewer labels than clients)
    assert!(ok > errs, "too many errors: {ok} ok, {errs} errors");
}

#[test]
fn same_seed_same_split_other_seed_other_split() {
    let labels = scattered(300, 6, 1);
    for spec in all_specs() {
        let a = assign(&labels, &spec, 4, 1, 11).unwrap();
        let b = assign(&labels, &spec, 4, 1, 11).unwrap();
        let c = assign(&labels, &spec, 4, 1, 12).unwrap();
        assert_eq!(a, b, "{spec:?}");
        assert_ne!(a, c, "{spec:?}");
    }
}

#[test]
fn iid_equals_the_existing_partition_iid() {
    for n in [1usize, 10, 99, 100, 1000] {
        for k in 1..=n.min(9) {
            for seed in [0u64, 5, 42] {
                let pool: Vec<Example> = (0..n as u32)
                    .map(|i| Example {
                        tokens: vec![256, i],
                        loss_start: 1,
                    })
                    .collect();
                let old: Vec<Vec<usize>> = partition_iid(pool, k, 1, seed)
                    .unwrap()
                    .into_iter()
                    .map(|shard| shard.iter().map(|e| e.tokens[1] as usize).collect())
                    .collect();
                let labels = scattered(n, 3, seed);
                let new = assign(&labels, &PartitionSpec::Iid, k, 1, seed).unwrap();
                assert_eq!(new, old, "n={n} k={k} seed={seed}");
            }
        }
    }
}

/// Mean over seeds of the mean per-client total variation from the global label mix,
/// on 2,000 items / 10 labels / 8 clients.
fn dirichlet_skew(alpha: f64) -> f64 {
    let labels = scattered(2000, 10, 3);
    let seeds = 0..8u64;
    let total: f64 = seeds
        .clone()
        .map(|seed| {
            let clients = assign(&labels, &PartitionSpec::Dirichlet { alpha }, 8, 1, seed)
                .unwrap_or_else(|e| panic!("alpha={alpha} seed={seed}: {e}"));
            mean_label_skew(&client_stats(&labels, &clients))
        })
        .sum();
    total / seeds.count() as f64
}

#[test]
fn small_alpha_is_skewed_large_alpha_is_close_to_iid() {
    // Measured (mean over seeds 0..8): alpha 0.1 -> 0.681, alpha 1 -> 0.340,
    // alpha 100 -> 0.037, alpha 1000 -> 0.013; the iid split -> 0.070 (iid is a random
    // sample, whose label mix varies by ~sqrt(p (1 - p) / 250) per label, while a large
    // alpha cuts every label in near-equal, stratified parts: closer to the global mix).
    let skew_01 = dirichlet_skew(0.1);
    let skew_1 = dirichlet_skew(1.0);
    let skew_100 = dirichlet_skew(100.0);
    let skew_1000 = dirichlet_skew(1000.0);
    let labels = scattered(2000, 10, 3);
    let iid: f64 = (0..8u64)
        .map(|seed| {
            let clients = assign(&labels, &PartitionSpec::Iid, 8, 1, seed).unwrap();
            mean_label_skew(&client_stats(&labels, &clients))
        })
        .sum::<f64>()
        / 8.0;
    eprintln!(
        "mean label TV: alpha 0.1 {skew_01:.3}, 1 {skew_1:.3}, 100 {skew_100:.3}, \
         1000 {skew_1000:.3}, iid {iid:.3}"
    );
    assert!(skew_01 > 0.4, "{skew_01}");
    assert!(skew_01 > 4.0 * skew_100, "{skew_01} vs {skew_100}");
    assert!(
        skew_01 > skew_1 && skew_1 > skew_100,
        "{skew_01} {skew_1} {skew_100}"
    );
    assert!(
        skew_1000 < 0.05,
        "alpha 1000 should be close to iid: {skew_1000}"
    );
    assert!(skew_1000 < 2.0 * iid, "{skew_1000} vs iid {iid}");
    assert!(iid < 0.12, "{iid}");
}

#[test]
fn tiny_and_huge_alphas_do_not_break() {
    let labels = scattered(500, 5, 0);
    for alpha in [1e-300, 1e-6, 0.01, 0.999_999, 1.0, 1.000_001, 1e9, 1e300] {
        for seed in 0..3 {
            // min 0: a tiny alpha gives each label to one client, leaving others empty
            let clients = assign(&labels, &PartitionSpec::Dirichlet { alpha }, 4, 0, seed)
                .unwrap_or_else(|e| panic!("alpha={alpha}: {e}"));
            assert_exact_cover(&clients, 500, &format!("alpha={alpha}"));
        }
    }
    // a tiny alpha puts each label whole on one client
    let clients = assign(&labels, &PartitionSpec::Dirichlet { alpha: 1e-6 }, 4, 0, 0).unwrap();
    let stats = client_stats(&labels, &clients);
    let placements: usize = stats.iter().map(ClientStats::distinct_labels).sum();
    assert_eq!(placements, 5, "{stats:?}");
}

#[test]
fn bad_spec_parameters_are_config_errors() {
    let labels = scattered(100, 4, 0);
    for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = assign(&labels, &PartitionSpec::Dirichlet { alpha }, 2, 1, 0).unwrap_err();
        assert_eq!(config_key(&err), "data.dirichlet_alpha", "{err}");
    }
    let spec = PartitionSpec::Shards {
        shards_per_client: 0,
    };
    let err = assign(&labels, &spec, 2, 1, 0).unwrap_err();
    assert_eq!(config_key(&err), "data.shards_per_client", "{err}");
}

#[test]
fn by_field_keeps_each_label_on_one_client_and_balances_sizes() {
    // unequal label sizes: label j has 5 + 7j items (j < 12)
    let labels: Vec<String> = (0..12)
        .flat_map(|j| std::iter::repeat_n(format!("subject{j:02}"), 5 + 7 * j))
        .collect();
    let largest = 5 + 7 * 11;
    for num_clients in 1..=12 {
        for seed in 0..4 {
            let clients = assign(&labels, &PartitionSpec::ByField, num_clients, 1, seed).unwrap();
            assert_exact_cover(&clients, labels.len(), "by_field");
            let stats = client_stats(&labels, &clients);
            let mut owner: BTreeMap<&String, usize> = BTreeMap::new();
            for (c, s) in stats.iter().enumerate() {
                for l in s.labels.keys() {
                    assert!(owner.insert(l, c).is_none(), "{l} on two clients");
                }
            }
            assert_eq!(owner.len(), 12);
            let sizes: Vec<usize> = stats.iter().map(|s| s.size).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(*min >= 1, "{sizes:?}");
            assert!(max - min <= largest, "{sizes:?}");
        }
    }
    // equal-sized labels: perfectly balanced when the count divides
    let labels = sorted(600, 12);
    let clients = assign(&labels, &PartitionSpec::ByField, 4, 1, 0).unwrap();
    assert!(clients.iter().all(|c| c.len() == 150));
}

#[test]
fn by_field_needs_as_many_labels_as_clients() {
    let labels = scattered(100, 3, 0);
    let err = assign(&labels, &PartitionSpec::ByField, 4, 1, 0).unwrap_err();
    assert_eq!(config_key(&err), "data.partition");
    let msg = err.to_string();
    assert!(msg.contains("3 distinct labels"), "{msg}");
    assert!(msg.contains("`federation.clients` = 4"), "{msg}");
}

/// Distinct labels in each shard-sized run of a sorted layout are at most 2 when every
/// label is at least a shard long, so a client holds at most `2 * shards_per_client`; when
/// shards line up with labels, exactly one label per shard.
#[test]
fn shards_give_each_client_few_labels() {
    // aligned: 10 labels x 100 items, 5 clients x 2 shards of 100
    let labels = sorted(1000, 10);
    for seed in 0..5 {
        let spec = PartitionSpec::Shards {
            shards_per_client: 2,
        };
        let clients = assign(&labels, &spec, 5, 1, seed).unwrap();
        assert_exact_cover(&clients, 1000, "shards");
        for s in client_stats(&labels, &clients) {
            assert_eq!(s.size, 200);
            assert!(s.distinct_labels() <= 2, "{s:?}");
        }
    }
    // not aligned: 10 labels x 100 items, 4 clients x 3 shards of 83 or 84
    let labels = scattered(1000, 10, 9);
    for seed in 0..5 {
        let spec = PartitionSpec::Shards {
            shards_per_client: 3,
        };
        let clients = assign(&labels, &spec, 4, 1, seed).unwrap();
        assert_exact_cover(&clients, 1000, "shards");
        for s in client_stats(&labels, &clients) {
            assert!((249..=252).contains(&s.size), "{s:?}");
            assert!(s.distinct_labels() <= 3 + 3, "{s:?}");
        }
    }
    // a pathological split is far more skewed than iid
    let stats = client_stats(
        &labels,
        &assign(
            &labels,
            &PartitionSpec::Shards {
                shards_per_client: 2,
            },
            5,
            1,
            0,
        )
        .unwrap(),
    );
    assert!(mean_label_skew(&stats) > 0.6, "{}", mean_label_skew(&stats));
}

#[test]
fn shards_need_as_many_items_as_shards() {
    let labels = sorted(11, 2);
    let spec = PartitionSpec::Shards {
        shards_per_client: 3,
    };
    assert!(assign(&labels, &spec, 3, 1, 0).is_ok());
    let err = assign(&labels, &spec, 4, 1, 0).unwrap_err();
    assert_eq!(config_key(&err), "data.shards_per_client", "{err}");
    assert!(err.to_string().contains("there are 11"), "{err}");
    let huge = PartitionSpec::Shards {
        shards_per_client: usize::MAX,
    };
    assert!(assign(&labels, &huge, 2, 1, 0).is_err());
}

#[test]
fn min_per_client_errors_name_the_key() {
    let labels = scattered(10, 2, 0);
    for spec in all_specs() {
        // 10 items over 3 clients: never 4 each
        let err = assign(&labels, &spec, 3, 4, 0).unwrap_err();
        assert_eq!(config_key(&err), "data.min_examples_per_client", "{spec:?}");
        assert!(err.to_string().contains("federation.clients"), "{err}");
        // more clients than items
        let err = assign(&labels, &spec, 11, 1, 0).unwrap_err();
        assert_eq!(config_key(&err), "federation.clients", "{spec:?}");
        // no clients
        let err = assign(&labels, &spec, 0, 1, 0).unwrap_err();
        assert_eq!(config_key(&err), "federation.clients", "{spec:?}");
        // no items
        let err = assign(&[], &spec, 2, 1, 0).unwrap_err();
        assert_eq!(config_key(&err), "federation.clients", "{spec:?}");
    }

    // a very skewed Dirichlet cannot give 8 clients 60 of 500 items each
    let labels = scattered(500, 5, 0);
    let spec = PartitionSpec::Dirichlet { alpha: 0.05 };
    let err = assign(&labels, &spec, 8, 60, 0).unwrap_err();
    assert_eq!(config_key(&err), "data.min_examples_per_client", "{err}");
    let msg = err.to_string();
    for part in [
        "500 training examples",
        "= 8",
        "alpha = 0.05",
        "= 60",
        "raise",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    // ... while a near-IID one can
    assert!(assign(&labels, &PartitionSpec::Dirichlet { alpha: 1e4 }, 8, 60, 0).is_ok());

    // by_field: one big label and one small one leave the second client short
    let mut labels = vec!["big".to_string(); 50];
    labels.extend(vec!["small".to_string(); 2]);
    let err = assign(&labels, &PartitionSpec::ByField, 2, 5, 0).unwrap_err();
    assert_eq!(config_key(&err), "data.min_examples_per_client", "{err}");
    assert!(err.to_string().contains("smallest client 2"), "{err}");
}

#[test]
fn client_stats_histograms_sum_to_sizes() {
    let labels = scattered(777, 7, 4);
    for spec in all_specs() {
        let clients = assign(&labels, &spec, 5, 1, 3).unwrap();
        let stats = client_stats(&labels, &clients);
        assert_eq!(stats.len(), 5);
        let mut pooled: BTreeMap<String, usize> = BTreeMap::new();
        for (s, c) in stats.iter().zip(&clients) {
            assert_eq!(s.size, c.len());
            assert_eq!(s.labels.values().sum::<usize>(), s.size, "{spec:?}");
            assert!(s.labels.values().all(|&n| n > 0));
            for (l, n) in &s.labels {
                *pooled.entry(l.clone()).or_default() += n;
            }
        }
        let expected = client_stats(&labels, &[(0..777).collect()]);
        assert_eq!(pooled, expected[0].labels);
    }
    // serializes for reports
    let stats = client_stats(&labels, &[vec![0, 1, 2]]);
    let json = serde_json::to_string(&stats).unwrap();
    let back: Vec<ClientStats> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, stats);
    // an index outside the labels counts in the size only, and does not panic
    let stats = client_stats(&labels, &[vec![0, 10_000]]);
    assert_eq!(stats[0].size, 2);
    assert_eq!(stats[0].labels.values().sum::<usize>(), 1);
}

#[test]
fn total_variation_basics() {
    let h = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
        pairs.iter().map(|&(l, n)| (l.to_string(), n)).collect()
    };
    assert_eq!(total_variation(&h(&[("a", 1)]), &h(&[("a", 5)])), 0.0);
    assert_eq!(total_variation(&h(&[("a", 1)]), &h(&[("b", 5)])), 1.0);
    let tv = total_variation(&h(&[("a", 1), ("b", 1)]), &h(&[("a", 1)]));
    assert!((tv - 0.5).abs() < 1e-12);
    assert_eq!(total_variation(&h(&[]), &h(&[("a", 1)])), 0.0);
    assert_eq!(mean_label_skew(&[]), 0.0);
}
