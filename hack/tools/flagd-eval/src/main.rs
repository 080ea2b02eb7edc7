//! `flagd-eval FILE FLAG KEYS [PREFIX]`: evaluates boolean flag FLAG of the flagd
//! flag file FILE for KEYS targeting keys (`PREFIX0`, `PREFIX1`, ...) through the
//! OpenFeature API and the official flagd provider in file mode, and prints how many
//! landed on each variant as JSON, e.g. `{"off":9012,"on":988}`.

use std::collections::BTreeMap;

use open_feature::{EvaluationContext, OpenFeature};
use open_feature_flagd::{FlagdOptions, FlagdProvider, ResolverType};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, flag, keys, rest @ ..] = args.as_slice() else {
        eprintln!("usage: flagd-eval FILE FLAG KEYS [PREFIX]");
        std::process::exit(2);
    };
    let keys: usize = keys.parse().expect("KEYS is a number");
    let prefix = rest.first().map_or("user-", String::as_str);
    let provider = FlagdProvider::new(FlagdOptions {
        resolver_type: ResolverType::File,
        source_configuration: Some(file.clone()),
        cache_settings: None,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|error| {
        eprintln!("flagd-eval: the provider refused {file}: {error}");
        std::process::exit(1);
    });
    let client = {
        let mut api = OpenFeature::singleton_mut().await;
        api.set_provider(provider).await;
        api.create_client()
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..keys {
        let context = EvaluationContext::default().with_targeting_key(format!("{prefix}{n}"));
        let details = client.get_bool_details(flag, Some(&context), None).await;
        let variant = match details {
            Ok(details) => details.variant.unwrap_or_else(|| "(none)".into()),
            Err(error) => format!("error: {:?}", error.code),
        };
        *counts.entry(variant).or_default() += 1;
    }
    println!("{}", serde_json::to_string(&counts).expect("JSON"));
}
