//! Evaluation of projected flags by the official OpenFeature flagd provider, in its
//! in-process file mode (`flagd-eval`, built by hack/tools).

use std::{collections::BTreeMap, process::Command};

use super::env;

/// How many of `keys` targeting keys the provider puts on each variant of boolean
/// `flag` in `flags_json`.
pub fn evaluated(flags_json: &str, flag: &str, keys: usize) -> BTreeMap<String, usize> {
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("flags.json");
    std::fs::write(&file, flags_json).expect("write flags.json");
    let output = Command::new(format!("{}/flagd-eval", env().var("SUMMIT_TOOLS_BIN")))
        .arg(&file)
        .args([flag, &keys.to_string()])
        .output()
        .expect("run flagd-eval");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let counts: BTreeMap<String, usize> =
        serde_json::from_slice(&output.stdout).expect("counts by variant");
    assert_eq!(counts.values().sum::<usize>(), keys, "{counts:?}");
    counts
}
