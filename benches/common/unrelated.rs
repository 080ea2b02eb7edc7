//! Objects the operator has no business with: large ConfigMaps and Secrets without its
//! labels, in the namespace it watches. Its watches select by label, so they should
//! cost it no memory and no request.

use std::{collections::BTreeMap, time::Duration};

use futures::{StreamExt, stream};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};

/// The label the bench finds its unrelated objects by (the operator selects on others).
const LABEL: &str = "summit-bench";

/// The size of each object's one value: just under a ConfigMap's 1 MiB limit.
const SIZE: usize = 1_000_000;

/// What unrelated objects cost the operator.
pub struct Cost {
    /// Its resident memory after them, less before.
    pub rss_mib: f64,
    /// The requests it sent meanwhile, to every backend.
    pub requests: f64,
}

/// Creates `count` unrelated objects where the operator (`pid`, metrics on `port`)
/// watches, gives its watches time to deliver them, measures what they cost it, and
/// deletes them again.
pub async fn cost(client: &Client, ns: &str, count: usize, (pid, port): (u32, u16)) -> Cost {
    let backends = ["kubernetes", "postgres", "consul"];
    let rss_before = crate::common::rss_mib(pid);
    let requests_before: f64 = crate::common::requests(port, &backends).await.iter().sum();
    create(client, ns, count).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_mib = crate::common::rss_mib(pid) - rss_before;
    let requests_after: f64 = crate::common::requests(port, &backends).await.iter().sum();
    delete(client, ns).await;
    Cost {
        rss_mib,
        requests: requests_after - requests_before,
    }
}

/// Creates `count` objects of about 1 MiB, half ConfigMaps and half Secrets.
async fn create(client: &Client, ns: &str, count: usize) {
    let value = "x".repeat(SIZE);
    stream::iter(0..count)
        .map(|i| {
            let (client, value) = (client.clone(), value.clone());
            async move {
                let metadata = ObjectMeta {
                    name: Some(format!("unrelated-{i}")),
                    labels: Some(BTreeMap::from([(LABEL.to_owned(), "unrelated".to_owned())])),
                    ..ObjectMeta::default()
                };
                let data = BTreeMap::from([("blob".to_owned(), value)]);
                let params = PostParams::default();
                if i % 2 == 0 {
                    let config_map = ConfigMap {
                        metadata,
                        data: Some(data),
                        ..ConfigMap::default()
                    };
                    let api: Api<ConfigMap> = Api::namespaced(client, ns);
                    api.create(&params, &config_map).await.map(drop)
                } else {
                    let data = data
                        .into_iter()
                        .map(|(k, v)| (k, ByteString(v.into_bytes())));
                    let secret = Secret {
                        metadata,
                        data: Some(data.collect()),
                        ..Secret::default()
                    };
                    let api: Api<Secret> = Api::namespaced(client, ns);
                    api.create(&params, &secret).await.map(drop)
                }
                .expect("create an unrelated object");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

/// Deletes them again, so later benches in the same environment do not meet them.
async fn delete(client: &Client, ns: &str) {
    let selector = ListParams::default().labels(LABEL);
    let params = DeleteParams::default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    config_maps
        .delete_collection(&params, &selector)
        .await
        .expect("delete the unrelated ConfigMaps");
    secrets
        .delete_collection(&params, &selector)
        .await
        .expect("delete the unrelated Secrets");
}
