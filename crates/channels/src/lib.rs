//! Wallet-side channels. Today: the deterministic in-process sandbox wallet.

pub mod sandbox;

pub use sandbox::SandboxWallet;
