//! # cgfed-data
//!
//! The data side of a cgfed experiment, configured by the `[data]` table ([`DataConfig`]):
//!
//! - [`corpus`]: text that needs no download (the built-in `shakespeare-excerpt`, three
//!   public-domain plays) or a user text file;
//! - [`tokenizer`]: [`ByteTokenizer`] (one id per UTF-8 byte, plus BOS and EOS; vocabulary
//!   258), fit for tiny random LLaMA presets, chosen with [`build_tokenizer`];
//! - [`split`]: cutting the token stream into fixed-length [`Example`](cgfed_core::Example)s
//!   and holding out a seeded share for evaluation;
//! - [`partition`]: sharing the training pool among clients (`iid`);
//! - [`build_federated_data`]: all of the above in one call, returning [`FederatedData`]
//!   with a [`PartitionSummary`].
//!
//! The model's trainer computes the evaluation loss from [`FederatedData::eval`]. Every
//! random choice is seeded by the experiment seed, so the same config and seed give the
//! same splits on every machine.
//!
//! ```
//! use cgfed_data::{build_federated_data, build_tokenizer, DataConfig};
//!
//! let table: toml::Table = toml::from_str("seq_len = 32\nmax_train_examples = 400").unwrap();
//! let cfg = DataConfig::from_table(&table).unwrap();
//! let tokenizer = build_tokenizer(&cfg, None).unwrap(); // no model tokenizer: bytes
//! let data = build_federated_data(&cfg, tokenizer.as_ref(), 4, 42).unwrap();
//!
//! assert_eq!(data.clients.len(), 4);
//! assert_eq!(data.summary.client_sizes, vec![100; 4]);
//! assert!(data.eval.iter().all(|ex| ex.tokens.len() == 32 && ex.loss_start == 1));
//! println!("{}", data.summary);
//! ```

pub mod arrow_table;
pub mod config;
pub mod corpus;
pub mod datasets;
pub mod federated;
pub mod partition;
pub mod prompts;
pub mod records;
pub mod shuffle;
pub mod split;
pub mod summary;
pub mod tokenizer;

pub use config::{DataConfig, PartitionMethod, TokenizerKind, DEFAULT_CORPUS};
pub use corpus::CorpusSource;
pub use federated::{build_federated_data, FederatedData};
pub use summary::PartitionSummary;
pub use tokenizer::{build_tokenizer, ByteTokenizer};
pub mod partitioners;
pub mod userdata;
