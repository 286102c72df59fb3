//! The Cloudflare client against the stateful fake API (`tests/support/fake_cloudflare.rs`): zones,
//! DNS records one by one and in batches, tunnel configurations, and the HTTP policy (retries,
//! `429 Retry-After`, timeouts, outcome-unknown POSTs, authentication, no token in errors). The last
//! section checks the fake's own contract with raw HTTP calls.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};
use supervisor::clients::cloudflare::{
    BatchDelete, BatchPatch, BatchPut, BatchRequest, CloudflareClient, CloudflareError, Deletion,
    DnsRecordFilter, DnsRecordPatch, DnsRecordSpec, IngressRule, RecordType,
};
use supervisor::clients::http::{TransportKind, UnknownCause};
use supervisor::clients::{ApiError, HttpPolicy, RetryPolicy};

use support::fake_cloudflare::{ACCOUNT_ID, FakeCloudflare, Fault, TOKEN};

const ZONE: &str = "example.com";
const TUNNEL_TARGET: &str = "6ff42ae2-765d-4adf-8112-31c55c1551ef.cfargotunnel.com";

fn fast_policy() -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(5),
        },
    }
}

fn client_with(fake: &FakeCloudflare, token: SecretString, policy: HttpPolicy) -> CloudflareClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CloudflareClient::new(fake.base_url(), token, policy).expect("build the Cloudflare client")
}

fn client(fake: &FakeCloudflare) -> CloudflareClient {
    client_with(fake, fake.token(), fast_policy())
}

async fn fake_with_zone() -> (FakeCloudflare, String) {
    let fake = FakeCloudflare::start().await;
    let zone = fake.add_zone(ZONE);
    (fake, zone)
}

fn api_error(e: &CloudflareError) -> &ApiError {
    match e {
        CloudflareError::Api(a) => a,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Neither the Display nor the Debug form of an error may carry the token.
#[track_caller]
fn assert_no_token(e: &dyn std::fmt::Debug, display: &str, token: &str) {
    assert!(!display.contains(token), "token in Display: {display}");
    let debug = format!("{e:?}");
    assert!(!debug.contains(token), "token in Debug: {debug}");
}

// --- zones ----------------------------------------------------------------------------------------

#[tokio::test]
async fn zone_lookup_matches_the_exact_name() {
    let fake = FakeCloudflare::start().await;
    let id = fake.add_zone(ZONE);
    fake.add_zone("sub.example.com");
    fake.add_zone("example.org");
    let c = client(&fake);

    assert_eq!(c.zone_id_by_name("example.com").await.expect("found"), id);
    // Case and a trailing dot do not matter.
    assert_eq!(c.zone_id_by_name("Example.COM.").await.expect("found"), id);
    let zone = c.zone_by_name(ZONE).await.expect("found");
    assert_eq!(zone.name, ZONE);
    assert_eq!(zone.status.as_deref(), Some("active"));

    let req = &fake.requests()[0];
    assert_eq!(req.path, "/zones");
    assert!(req.query.contains("name=example.com"), "{}", req.query);
    assert!(req.query.contains("per_page=50"), "{}", req.query);
}

#[tokio::test]
async fn zone_lookup_reports_missing_and_ambiguous_zones() {
    let fake = FakeCloudflare::start().await;
    fake.add_zone("example.org");
    let c = client(&fake);

    let e = c
        .zone_id_by_name("example.com")
        .await
        .expect_err("not found");
    assert!(
        matches!(&e, CloudflareError::ZoneNotFound { name } if name == "example.com"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("zone `example.com` not found"),
        "{e}"
    );

    let a = fake.add_zone_in_account(ZONE, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    let b = fake.add_zone_in_account(ZONE, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    let e = c.zone_id_by_name(ZONE).await.expect_err("ambiguous");
    match &e {
        CloudflareError::ZoneAmbiguous { name, ids } => {
            assert_eq!(name, ZONE);
            assert_eq!(ids, &vec![a, b]);
        }
        other => panic!("expected ZoneAmbiguous, got {other:?}"),
    }
}

// --- listing --------------------------------------------------------------------------------------

#[tokio::test]
async fn listing_follows_pagination_to_the_end() {
    let (fake, zone) = fake_with_zone().await;
    let mut seeded = HashSet::new();
    for i in 0..250 {
        seeded.insert(fake.add_record(
            &zone,
            json!({"type": "CNAME", "name": format!("svc{i:03}.example.com"),
                   "content": TUNNEL_TARGET, "ttl": 1, "proxied": true}),
        ));
    }
    let c = client(&fake).with_page_size(40);

    let records = c
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect("list");
    assert_eq!(records.len(), 250);
    let ids: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, seeded);
    // ceil(250 / 40) = 7 pages, each asked for once.
    assert_eq!(fake.count(Method::GET, "/zones/*/dns_records"), 7);
    let queries: Vec<String> = fake.requests().into_iter().map(|r| r.query).collect();
    for (i, q) in queries.iter().enumerate() {
        assert!(q.contains(&format!("page={}", i + 1)), "{q}");
        assert!(q.contains("per_page=40"), "{q}");
    }

    // The default page size reads the same zone in one call.
    fake.clear_requests();
    let all = client(&fake)
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 250);
    assert_eq!(fake.count(Method::GET, "/zones/*/dns_records"), 1);
    assert!(fake.requests()[0].query.contains("per_page=5000"));
}

#[tokio::test]
async fn listing_filters_and_decodes_records() {
    let (fake, zone) = fake_with_zone().await;
    fake.add_record(
        &zone,
        json!({"type": "CNAME", "name": "api.example.com", "content": TUNNEL_TARGET,
               "ttl": 1, "proxied": true, "comment": "managed-by: supervisor", "tags": ["owner:sup"]}),
    );
    fake.add_record(
        &zone,
        json!({"type": "A", "name": "www.example.com", "content": "192.0.2.1", "ttl": 300}),
    );
    fake.add_record(
        &zone,
        json!({"type": "TXT", "name": "txt.example.com", "content": "hello", "ttl": 1,
               "comment": "by hand"}),
    );
    let c = client(&fake);

    let by_name = c
        .list_dns_records(
            &zone,
            &DnsRecordFilter {
                name: Some("API.example.com".into()),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(by_name.len(), 1);
    let cname = &by_name[0];
    assert_eq!(cname.record_type, RecordType::CNAME);
    assert_eq!(cname.name, "api.example.com");
    assert_eq!(cname.content, TUNNEL_TARGET);
    assert!(cname.proxied && cname.proxiable);
    assert_eq!(cname.ttl, 1);
    assert_eq!(cname.comment.as_deref(), Some("managed-by: supervisor"));
    assert_eq!(cname.tags, vec!["owner:sup".to_string()]);
    assert!(cname.created_on.is_some() && cname.modified_on.is_some());

    let managed = c
        .list_dns_records(
            &zone,
            &DnsRecordFilter {
                comment_contains: Some("SUPERVISOR".into()),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(
        managed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["api.example.com"]
    );

    let a_records = c
        .list_dns_records(
            &zone,
            &DnsRecordFilter {
                record_type: Some(RecordType::A),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(a_records.len(), 1);
    assert_eq!(a_records[0].content, "192.0.2.1");
    assert_eq!(a_records[0].ttl, 300);
    assert!(!a_records[0].proxied);
}

#[tokio::test]
async fn listing_keeps_records_of_other_types() {
    let (fake, zone) = fake_with_zone().await;
    fake.add_record(
        &zone,
        json!({"type": "SRV", "name": "_sip._tcp.example.com", "ttl": 3600,
               "data": {"priority": 10, "weight": 5, "port": 5060, "target": "sip.example.com"}}),
    );
    fake.add_record(
        &zone,
        json!({"type": "MX", "name": "example.com", "content": "mx.example.net", "priority": 10, "ttl": 1}),
    );
    fake.add_unchecked_record(&zone, "FUTURE", "x.example.com", "opaque");
    let c = client(&fake);

    let mut records = c
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect("list");
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let types: Vec<RecordType> = records.iter().map(|r| r.record_type.clone()).collect();
    assert_eq!(
        types,
        vec![
            RecordType::SRV,
            RecordType::MX,
            RecordType::Other("FUTURE".into())
        ]
    );
    assert!(records[0].data.is_some());
    assert_eq!(records[1].priority, Some(10));
    assert_eq!(records[2].content, "opaque");
}

// --- single-record changes ------------------------------------------------------------------------

#[tokio::test]
async fn create_patch_put_and_delete_a_record() {
    let (fake, zone) = fake_with_zone().await;
    let c = client(&fake);

    let created = c
        .create_dns_record(
            &zone,
            &DnsRecordSpec::cname("App.Example.com.", TUNNEL_TARGET)
                .ttl(300)
                .comment("managed-by: supervisor"),
        )
        .await
        .expect("create");
    assert_eq!(created.name, "app.example.com", "normalised by the API");
    assert_eq!(created.ttl, 300);
    assert!(!created.proxied);
    let stored = fake.record(&zone, &created.id).expect("stored");
    assert_eq!(stored.content, TUNNEL_TARGET);
    assert_eq!(stored.comment.as_deref(), Some("managed-by: supervisor"));

    let patched = c
        .update_dns_record(
            &zone,
            &created.id,
            &DnsRecordPatch {
                proxied: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("patch");
    assert!(patched.proxied);
    assert_eq!(patched.ttl, 1, "proxied records have automatic TTL");
    assert_eq!(
        patched.comment.as_deref(),
        Some("managed-by: supervisor"),
        "PATCH keeps fields it does not name"
    );
    assert_eq!(patched.created_on, created.created_on);

    let put = c
        .overwrite_dns_record(
            &zone,
            &created.id,
            &DnsRecordSpec::cname("app.example.com", "other.example.net"),
        )
        .await
        .expect("put");
    assert_eq!(put.id, created.id);
    assert_eq!(put.content, "other.example.net");
    assert_eq!(put.comment, None, "PUT clears what it does not give");
    assert!(!put.proxied);
    assert_eq!(
        fake.record(&zone, &created.id).expect("stored").content,
        "other.example.net"
    );

    let fetched = c.dns_record(&zone, &created.id).await.expect("get");
    assert_eq!(fetched, put);

    assert_eq!(
        c.delete_dns_record(&zone, &created.id)
            .await
            .expect("delete"),
        Deletion::Deleted
    );
    assert!(fake.records(&zone).is_empty());
    assert_eq!(
        c.delete_dns_record(&zone, &created.id)
            .await
            .expect("delete again"),
        Deletion::AlreadyAbsent
    );

    let e = c.dns_record(&zone, &created.id).await.expect_err("gone");
    assert!(e.is_not_found() && e.has_code(81044), "{e}");
    // An unknown zone is not "already absent".
    let e = c
        .delete_dns_record("ffffffffffffffffffffffffffffffff", &created.id)
        .await
        .expect_err("unknown zone");
    assert!(e.has_code(7003), "{e}");
}

#[tokio::test]
async fn validation_errors_surface_with_code_and_message() {
    let (fake, zone) = fake_with_zone().await;
    let c = client(&fake);
    let cname = DnsRecordSpec::cname("app.example.com", TUNNEL_TARGET);
    c.create_dns_record(&zone, &cname).await.expect("create");

    // Identical record.
    let e = c
        .create_dns_record(&zone, &cname)
        .await
        .expect_err("identical");
    assert!(e.has_code(81058), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("POST /zones/{zone}/dns_records")),
        "names method and path: {text}"
    );
    assert!(
        text.contains("[81058] An identical record already exists."),
        "{text}"
    );
    assert_eq!(api_error(&e).status(), Some(400));
    assert!(matches!(api_error(&e), ApiError::Rejected { .. }));

    // Same content, other settings.
    let e = c
        .create_dns_record(&zone, &cname.clone().proxied(true))
        .await
        .expect_err("exists");
    assert!(e.has_code(81057), "{e}");

    // Anything else at a CNAME's name.
    let txt = DnsRecordSpec {
        record_type: RecordType::TXT,
        content: "v=spf1 -all".into(),
        ..cname.clone()
    };
    let e = c
        .create_dns_record(&zone, &txt)
        .await
        .expect_err("cname exists");
    assert!(e.has_code(81054), "{e}");
    assert!(
        e.to_string()
            .contains("A CNAME record with that host already exists."),
        "{e}"
    );

    // A CNAME where other records are.
    let a = DnsRecordSpec {
        record_type: RecordType::A,
        name: "www.example.com".into(),
        content: "192.0.2.10".into(),
        ..cname.clone()
    };
    c.create_dns_record(&zone, &a).await.expect("create A");
    let e = c
        .create_dns_record(
            &zone,
            &DnsRecordSpec::cname("www.example.com", TUNNEL_TARGET),
        )
        .await
        .expect_err("host exists");
    assert!(e.has_code(81053), "{e}");

    // TTL out of range.
    let e = c
        .create_dns_record(
            &zone,
            &DnsRecordSpec::cname("ttl.example.com", TUNNEL_TARGET).ttl(30),
        )
        .await
        .expect_err("ttl");
    assert!(e.has_code(9021), "{e}");
    assert!(
        e.to_string()
            .contains("Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."),
        "{e}"
    );

    // Only A, AAAA and CNAME can be proxied.
    let e = c
        .create_dns_record(
            &zone,
            &DnsRecordSpec {
                record_type: RecordType::TXT,
                name: "txt.example.com".into(),
                content: "x".into(),
                ..cname.clone()
            }
            .proxied(true),
        )
        .await
        .expect_err("not proxiable");
    assert!(e.has_code(9004), "{e}");

    // A name outside the zone.
    let e = c
        .create_dns_record(
            &zone,
            &DnsRecordSpec::cname("app.example.org", TUNNEL_TARGET),
        )
        .await
        .expect_err("outside");
    assert!(e.has_code(9000), "{e}");

    // Nothing of the rejected calls reached the zone.
    assert_eq!(fake.records(&zone).len(), 2);
}

// --- batches --------------------------------------------------------------------------------------

#[tokio::test]
async fn batch_runs_deletes_patches_puts_then_posts() {
    let (fake, zone) = fake_with_zone().await;
    // An A record to be replaced by a CNAME at the same name: only possible because deletes run
    // before posts.
    let a = fake.add_record(
        &zone,
        json!({"type": "A", "name": "app.example.com", "content": "192.0.2.1", "ttl": 1}),
    );
    let p = fake.add_record(
        &zone,
        json!({"type": "CNAME", "name": "p.example.com", "content": TUNNEL_TARGET, "ttl": 1}),
    );
    let u = fake.add_record(
        &zone,
        json!({"type": "CNAME", "name": "u.example.com", "content": TUNNEL_TARGET, "ttl": 1,
               "comment": "old"}),
    );
    let c = client(&fake);

    let batch = BatchRequest {
        // Listed posts-first on purpose: the order of execution is the API's, not the body's.
        posts: vec![DnsRecordSpec::cname("app.example.com", TUNNEL_TARGET).proxied(true)],
        puts: vec![BatchPut {
            id: u.clone(),
            record: DnsRecordSpec::cname("u.example.com", "elsewhere.example.net"),
        }],
        patches: vec![BatchPatch {
            id: p.clone(),
            patch: DnsRecordPatch {
                proxied: Some(true),
                comment: Some("managed-by: supervisor".into()),
                ..Default::default()
            },
        }],
        deletes: vec![BatchDelete { id: a.clone() }],
    };
    let result = c.batch_dns_records(&zone, &batch).await.expect("batch");
    assert_eq!(result.deletes.len(), 1);
    assert_eq!(result.deletes[0].id, a);
    assert_eq!(result.deletes[0].record_type, RecordType::A);
    assert_eq!(result.patches.len(), 1);
    assert!(result.patches[0].proxied);
    assert_eq!(result.puts[0].content, "elsewhere.example.net");
    assert_eq!(result.puts[0].comment, None);
    assert_eq!(result.posts[0].name, "app.example.com");
    assert_eq!(result.posts[0].record_type, RecordType::CNAME);

    let mut now: Vec<(String, String)> = fake
        .records(&zone)
        .into_iter()
        .map(|r| (r.name, r.record_type))
        .collect();
    now.sort();
    assert_eq!(
        now,
        vec![
            ("app.example.com".into(), "CNAME".into()),
            ("p.example.com".into(), "CNAME".into()),
            ("u.example.com".into(), "CNAME".into()),
        ]
    );
    assert_eq!(fake.count(Method::POST, "/zones/*/dns_records/batch"), 1);

    // An empty batch makes no call.
    c.batch_dns_records(&zone, &BatchRequest::default())
        .await
        .expect("empty");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let (fake, zone) = fake_with_zone().await;
    let doomed = fake.add_record(
        &zone,
        json!({"type": "CNAME", "name": "old.example.com", "content": TUNNEL_TARGET, "ttl": 1}),
    );
    fake.add_record(
        &zone,
        json!({"type": "CNAME", "name": "kept.example.com", "content": TUNNEL_TARGET, "ttl": 1}),
    );
    let before = fake.records(&zone);
    let c = client(&fake);

    // The second post duplicates an existing record: the delete and the first post must not stay.
    let batch = BatchRequest {
        deletes: vec![BatchDelete { id: doomed.clone() }],
        posts: vec![
            DnsRecordSpec::cname("new.example.com", TUNNEL_TARGET),
            DnsRecordSpec::cname("kept.example.com", TUNNEL_TARGET),
        ],
        ..Default::default()
    };
    let e = c.batch_dns_records(&zone, &batch).await.expect_err("fails");
    assert!(e.has_code(81058), "{e}");
    assert_eq!(e.messages()[0].pointer.as_deref(), Some("/posts/1"));
    assert!(e.to_string().contains("(at /posts/1)"), "{e}");
    assert_eq!(fake.records(&zone), before, "nothing applied");
    assert!(fake.record(&zone, &doomed).is_some());

    // A failure injected at the second action (the first post) leaves the delete unapplied too.
    fake.fail_next_batch_at(1);
    let ok_batch = BatchRequest {
        deletes: vec![BatchDelete { id: doomed.clone() }],
        posts: vec![DnsRecordSpec::cname("new.example.com", TUNNEL_TARGET)],
        ..Default::default()
    };
    let e = c
        .batch_dns_records(&zone, &ok_batch)
        .await
        .expect_err("injected");
    assert_eq!(e.messages()[0].pointer.as_deref(), Some("/posts/0"));
    assert_eq!(fake.records(&zone), before);

    // The same batch goes through once the fault is spent.
    c.batch_dns_records(&zone, &ok_batch)
        .await
        .expect("applies");
    assert!(fake.record(&zone, &doomed).is_none());
    assert_eq!(fake.records(&zone).len(), 2);
}

#[tokio::test]
async fn batch_over_the_per_call_limit_is_refused() {
    let (fake, zone) = fake_with_zone().await;
    let c = client(&fake);

    let posts = |n: usize| -> BatchRequest {
        BatchRequest {
            posts: (0..n)
                .map(|i| DnsRecordSpec::cname(format!("h{i}.example.com"), TUNNEL_TARGET))
                .collect(),
            ..Default::default()
        }
    };
    // The Free plan's default: 200.
    let e = c
        .batch_dns_records(&zone, &posts(201))
        .await
        .expect_err("too big");
    assert!(e.has_code(1004), "{e}");
    assert!(
        e.to_string()
            .contains("201 record changes; the limit per request is 200"),
        "{e}"
    );
    assert!(fake.records(&zone).is_empty());
    c.batch_dns_records(&zone, &posts(200))
        .await
        .expect("at the limit");
    assert_eq!(fake.records(&zone).len(), 200);

    fake.set_batch_limit(3);
    let four = BatchRequest {
        deletes: fake.records(&zone)[..2]
            .iter()
            .map(|r| BatchDelete { id: r.id.clone() })
            .collect(),
        posts: vec![
            DnsRecordSpec::cname("x1.example.com", TUNNEL_TARGET),
            DnsRecordSpec::cname("x2.example.com", TUNNEL_TARGET),
        ],
        ..Default::default()
    };
    assert_eq!(four.len(), 4);
    let e = c
        .batch_dns_records(&zone, &four)
        .await
        .expect_err("too big");
    assert!(e.to_string().contains("the limit per request is 3"), "{e}");
    assert_eq!(fake.records(&zone).len(), 200);
}

// --- tunnels --------------------------------------------------------------------------------------

#[tokio::test]
async fn tunnel_configuration_read_modify_write_keeps_unknown_fields() {
    let fake = FakeCloudflare::start().await;
    let tunnel_id = fake.add_tunnel(ACCOUNT_ID, "fleet");
    let original = json!({
        "ingress": [
            {"hostname": "legacy.example.com", "service": "https://localhost:8443",
             "originRequest": {"noTLSVerify": true, "httpHostHeader": "legacy.internal",
                               "futureOriginKnob": {"x": [1, 2, 3]}},
             "futureRuleKey": "kept"},
            {"service": "http_status:404"}
        ],
        "originRequest": {"connectTimeout": 30, "keepAliveConnections": 100},
        "futureTopLevel": {"enabled": true}
    });
    fake.set_tunnel_config(ACCOUNT_ID, &tunnel_id, original.clone());
    let c = client(&fake);

    let tunnel = c.tunnel(ACCOUNT_ID, &tunnel_id).await.expect("tunnel");
    assert_eq!(tunnel.id, tunnel_id);
    assert_eq!(tunnel.name, "fleet");
    assert!(tunnel.is_remotely_managed());
    assert_eq!(
        tunnel.cname_target(),
        format!("{tunnel_id}.cfargotunnel.com")
    );

    let current = c
        .tunnel_configuration(ACCOUNT_ID, &tunnel_id)
        .await
        .expect("read");
    assert_eq!(current.version, 1);
    assert_eq!(current.tunnel_id, tunnel_id);
    assert_eq!(current.source.as_deref(), Some("cloudflare"));
    assert_eq!(current.config.ingress.len(), 2);

    let mut config = current.config.clone();
    let at = config.ingress.len() - 1;
    config.ingress.insert(
        at,
        IngressRule::new("api.example.com", "http://localhost:3101"),
    );
    let written = c
        .put_tunnel_configuration(ACCOUNT_ID, &tunnel_id, &config)
        .await
        .expect("write");
    assert_eq!(written.version, 2);
    assert_eq!(written.config, config);

    let stored = fake.tunnel_config(ACCOUNT_ID, &tunnel_id).expect("stored");
    assert_eq!(stored.version, 2);
    let mut expected = original;
    expected["ingress"].as_array_mut().expect("array").insert(
        1,
        json!({"hostname": "api.example.com", "service": "http://localhost:3101"}),
    );
    assert_eq!(
        stored.config,
        Some(expected),
        "everything not modelled survives"
    );
}

#[tokio::test]
async fn unconfigured_tunnel_reads_as_version_zero() {
    let fake = FakeCloudflare::start().await;
    let tunnel_id = fake.add_tunnel(ACCOUNT_ID, "fresh");
    let c = client(&fake);
    let current = c
        .tunnel_configuration(ACCOUNT_ID, &tunnel_id)
        .await
        .expect("read");
    assert_eq!(current.version, 0);
    assert!(current.config.ingress.is_empty());

    let e = c
        .tunnel_configuration("ffffffffffffffffffffffffffffffff", &tunnel_id)
        .await
        .expect_err("wrong account");
    assert!(e.is_not_found() && e.has_code(7003), "{e}");
}

#[tokio::test]
async fn invalid_tunnel_configurations_are_rejected() {
    let fake = FakeCloudflare::start().await;
    let tunnel_id = fake.add_tunnel(ACCOUNT_ID, "fleet");
    let c = client(&fake);
    let with = |rules: Vec<IngressRule>| supervisor::clients::cloudflare::TunnelConfig {
        ingress: rules,
        ..Default::default()
    };

    let cases = [
        (
            with(vec![IngressRule::new(
                "a.example.com",
                "http://localhost:1",
            )]),
            "The last ingress rule must match all URLs",
        ),
        (
            with(vec![
                IngressRule::catch_all("http_status:404"),
                IngressRule::catch_all("http_status:404"),
            ]),
            "Rule #1 is matching all URLs, but it is not the last rule",
        ),
        (
            with(vec![
                IngressRule::new("a.example.com:8080", "http://localhost:1"),
                IngressRule::catch_all("http_status:404"),
            ]),
            "Hostname cannot contain a port",
        ),
        (
            with(vec![
                IngressRule::new("a.*.example.com", "http://localhost:1"),
                IngressRule::catch_all("http_status:404"),
            ]),
            "Hostname patterns can have at most one wildcard character",
        ),
        (with(vec![]), "at least one ingress rule is required"),
    ];
    for (config, message) in cases {
        let e = c
            .put_tunnel_configuration(ACCOUNT_ID, &tunnel_id, &config)
            .await
            .expect_err(message);
        assert!(e.has_code(1056), "{e}");
        assert!(
            e.to_string().contains(message),
            "expected `{message}` in: {e}"
        );
    }
    assert_eq!(
        fake.tunnel_config(ACCOUNT_ID, &tunnel_id)
            .expect("tunnel")
            .version,
        0,
        "nothing was stored"
    );

    // A leftmost wildcard is fine.
    let good = with(vec![
        IngressRule::new("*.example.com", "http://localhost:1"),
        IngressRule::catch_all("http_status:404"),
    ]);
    let written = c
        .put_tunnel_configuration(ACCOUNT_ID, &tunnel_id, &good)
        .await
        .expect("valid");
    assert_eq!(written.version, 1);
}

// --- HTTP policy ----------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_429_waits_for_retry_after_then_succeeds() {
    let (fake, zone) = fake_with_zone().await;
    fake.inject(Fault::rate_limited(1).on(Method::POST, "/zones/*/dns_records"));
    let c = client(&fake);

    let started = Instant::now();
    // A 429 was not processed: even a POST is sent again.
    let created = c
        .create_dns_record(
            &zone,
            &DnsRecordSpec::cname("app.example.com", TUNNEL_TARGET),
        )
        .await
        .expect("succeeds after waiting");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}, less than Retry-After",
        started.elapsed()
    );
    assert_eq!(fake.count(Method::POST, "/zones/*/dns_records"), 2);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 200]);
    assert_eq!(fake.records(&zone).len(), 1);
    assert_eq!(fake.records(&zone)[0].id, created.id);
}

#[tokio::test]
async fn rate_limit_budget_blocks_until_the_window_ends() {
    let (fake, zone) = fake_with_zone().await;
    fake.set_rate_limit(2, Duration::from_secs(2));
    let c = client(&fake);
    let started = Instant::now();
    for _ in 0..3 {
        c.list_dns_records(&zone, &DnsRecordFilter::default())
            .await
            .expect("list");
    }
    // Retry-After is what is left of the 2 s window, rounded up.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200, 429, 200]);
}

#[tokio::test]
async fn retry_after_longer_than_allowed_is_returned_not_waited() {
    let (fake, zone) = fake_with_zone().await;
    fake.inject(Fault::rate_limited(300));
    let c = client(&fake);
    let started = Instant::now();
    let e = c
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect_err("rate limited");
    assert!(started.elapsed() < Duration::from_secs(2));
    match api_error(&e) {
        ApiError::RateLimited {
            retry_after,
            attempts,
            ..
        } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(300)));
            assert_eq!(*attempts, 1);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(e.has_code(971), "{e}");
    assert!(e.to_string().contains("retry after 300 s"), "{e}");
}

#[tokio::test]
async fn server_errors_on_get_are_retried() {
    let (fake, zone) = fake_with_zone().await;
    fake.add_record(
        &zone,
        json!({"type": "CNAME", "name": "a.example.com", "content": TUNNEL_TARGET, "ttl": 1}),
    );
    fake.inject(
        Fault::status(503)
            .on(Method::GET, "/zones/*/dns_records")
            .times(2),
    );
    let c = client(&fake);
    let records = c
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect("third attempt succeeds");
    assert_eq!(records.len(), 1);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);

    // Past the budget: a server error naming the call.
    fake.clear_requests();
    fake.inject(
        Fault::status(502)
            .on(Method::GET, "/zones/*/dns_records")
            .times(3),
    );
    let e = c
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect_err("gives up");
    assert!(
        matches!(
            api_error(&e),
            ApiError::Server {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains(&format!("GET /zones/{zone}/dns_records")),
        "{e}"
    );
    assert!(
        !e.to_string().contains("per_page"),
        "no query string in errors: {e}"
    );
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn server_error_on_post_is_not_retried() {
    let (fake, zone) = fake_with_zone().await;
    fake.inject(Fault::status(500).on(Method::POST, "/zones/*/dns_records"));
    let c = client(&fake);
    let spec = DnsRecordSpec::cname("app.example.com", TUNNEL_TARGET);

    let e = c
        .create_dns_record(&zone, &spec)
        .await
        .expect_err("unknown");
    assert!(e.is_outcome_unknown(), "{e:?}");
    assert!(
        matches!(
            api_error(&e),
            ApiError::OutcomeUnknown {
                cause: UnknownCause::Status(500),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&format!(
            "POST /zones/{zone}/dns_records: outcome unknown (HTTP 500: [1000] Internal server error (injected HTTP 500))"
        )),
        "{e}"
    );
    assert!(e.to_string().contains("re-read the remote state"), "{e}");
    assert_eq!(fake.count(Method::POST, "/zones/*/dns_records"), 1);
    assert!(fake.records(&zone).is_empty());

    // Why: the server may have applied it. Retrying blindly would then fail (or duplicate).
    fake.inject(Fault::status_after_apply(502).on(Method::POST, "/zones/*/dns_records"));
    let e = c
        .create_dns_record(&zone, &spec)
        .await
        .expect_err("unknown");
    assert!(e.is_outcome_unknown(), "{e:?}");
    assert_eq!(
        fake.records(&zone).len(),
        1,
        "applied although the answer was 502"
    );
    assert_eq!(fake.count(Method::POST, "/zones/*/dns_records"), 2);

    // Batches are POSTs too.
    fake.inject(Fault::status(503).on(Method::POST, "/zones/*/dns_records/batch"));
    let e = c
        .batch_dns_records(
            &zone,
            &BatchRequest {
                posts: vec![DnsRecordSpec::cname("b.example.com", TUNNEL_TARGET)],
                ..Default::default()
            },
        )
        .await
        .expect_err("unknown");
    assert!(e.is_outcome_unknown(), "{e:?}");
    assert_eq!(fake.count(Method::POST, "/zones/*/dns_records/batch"), 1);
}

fn short_timeout_policy() -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_millis(300),
        ..fast_policy()
    }
}

#[tokio::test]
async fn timeouts_on_get_are_retried_then_reported() {
    let (fake, zone) = fake_with_zone().await;
    fake.inject(
        Fault::latency(Duration::from_millis(1500)).on(Method::GET, "/zones/*/dns_records"),
    );
    let c = client_with(&fake, fake.token(), short_timeout_policy());

    c.list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect("second attempt succeeds");
    assert_eq!(fake.count(Method::GET, "/zones/*/dns_records"), 2);

    fake.clear_requests();
    fake.inject(
        Fault::latency(Duration::from_millis(1500))
            .on(Method::GET, "/zones/*/dns_records")
            .times(3),
    );
    let started = Instant::now();
    let e = c
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect_err("gives up");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    match api_error(&e) {
        ApiError::Transport {
            kind,
            attempts,
            method,
            path,
            ..
        } => {
            assert_eq!(*kind, TransportKind::Timeout);
            assert_eq!(*attempts, 3);
            assert_eq!(method, Method::GET);
            assert_eq!(path, &format!("/zones/{zone}/dns_records"));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "Cloudflare API: GET /zones/{zone}/dns_records: timed out after 3 attempt(s)"
        )),
        "{text}"
    );
    assert!(!text.contains("127.0.0.1"), "no URL in errors: {text}");
    assert_eq!(fake.count(Method::GET, "/zones/*/dns_records"), 3);
}

#[tokio::test]
async fn timeout_on_post_is_outcome_unknown() {
    let (fake, zone) = fake_with_zone().await;
    fake.inject(
        Fault::latency(Duration::from_millis(600)).on(Method::POST, "/zones/*/dns_records"),
    );
    let c = client_with(&fake, fake.token(), short_timeout_policy());

    let e = c
        .create_dns_record(
            &zone,
            &DnsRecordSpec::cname("slow.example.com", TUNNEL_TARGET),
        )
        .await
        .expect_err("unknown");
    assert!(
        matches!(
            api_error(&e),
            ApiError::OutcomeUnknown {
                cause: UnknownCause::Transport(TransportKind::Timeout),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(fake.count(Method::POST, "/zones/*/dns_records"), 1);
    assert!(
        fake.records(&zone).is_empty(),
        "still sleeping in the server"
    );
    // The server finishes the request after the client gave up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.records(&zone).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fake.records(&zone).len(),
        1,
        "applied although the client saw a timeout"
    );
}

#[tokio::test]
async fn unreachable_api_is_retried_even_for_post_then_reported() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = CloudflareClient::new(
        &format!("http://127.0.0.1:{port}/client/v4"),
        SecretString::from(TOKEN),
        fast_policy(),
    )
    .expect("client");
    let e = c
        .create_dns_record(
            "zone",
            &DnsRecordSpec::cname("a.example.com", TUNNEL_TARGET),
        )
        .await
        .expect_err("unreachable");
    // A connection that never opened carried nothing: not "outcome unknown".
    match api_error(&e) {
        ApiError::Transport { kind, attempts, .. } => {
            assert_eq!(*kind, TransportKind::Connect);
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(
        e.to_string()
            .contains("POST /zones/zone/dns_records: could not connect"),
        "{e}"
    );
    assert_no_token(&e, &e.to_string(), TOKEN);
}

#[tokio::test]
async fn bad_token_is_an_authentication_error_that_never_shows_the_token() {
    let (fake, zone) = fake_with_zone().await;
    let secret = "cf-wrong-token-0000SECRET1111";
    let c = client_with(&fake, SecretString::from(secret), fast_policy());

    let e = c
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect_err("auth");
    assert!(
        matches!(api_error(&e), ApiError::Auth { status: 403, .. }),
        "{e:?}"
    );
    assert!(e.has_code(10000), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("authentication failed (HTTP 403): [10000] Authentication error"),
        "{text}"
    );
    assert!(text.contains("check that the API token is valid"), "{text}");
    assert_no_token(&e, &text, secret);
    // Authentication errors are not retried.
    assert_eq!(fake.requests().len(), 1);

    let e = c.zone_id_by_name(ZONE).await.expect_err("auth");
    assert_no_token(&e, &e.to_string(), secret);
    assert!(
        !format!("{c:?}").contains(secret),
        "client Debug redacts the token"
    );

    // Every other kind of error with the good token: no token either.
    let good = client_with(&fake, fake.token(), short_timeout_policy());
    fake.inject(Fault::status(500).on(Method::POST, "/zones/*/dns_records"));
    let e = good
        .create_dns_record(&zone, &DnsRecordSpec::cname("a.example.com", TUNNEL_TARGET))
        .await
        .expect_err("unknown");
    assert_no_token(&e, &e.to_string(), TOKEN);
    fake.inject(Fault::latency(Duration::from_secs(1)).times(3));
    let e = good
        .list_dns_records(&zone, &DnsRecordFilter::default())
        .await
        .expect_err("timeout");
    assert_no_token(&e, &e.to_string(), TOKEN);
    let e = good.dns_record(&zone, "nope").await.expect_err("not found");
    assert_no_token(&e, &e.to_string(), TOKEN);
    assert!(!format!("{good:?}").contains(TOKEN));
}

/// A `MakeWriter` that collects log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn requests_are_logged_without_headers_or_query() {
    let (fake, zone) = fake_with_zone().await;
    fake.inject(Fault::status(503).on(Method::GET, "/zones/*/dns_records"));
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let c = client(&fake);
    c.list_dns_records(
        &zone,
        &DnsRecordFilter {
            comment: Some("needle-in-query".into()),
            ..Default::default()
        },
    )
    .await
    .expect("list");

    let text = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8");
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("supervisor::clients"))
        .collect();
    assert!(
        ours.iter().any(|l| l.contains("HTTP response")
            && l.contains("method=GET")
            && l.contains(&format!("path=/zones/{zone}/dns_records"))
            && l.contains("status=503")
            && l.contains("attempt=1")
            && l.contains("latency_ms=")),
        "{text}"
    );
    assert!(
        ours.iter().any(|l| l.contains("HTTP response")
            && l.contains("status=200")
            && l.contains("attempt=2")),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "token in logs: {text}");
    assert!(!text.contains("needle-in-query"), "query in logs: {text}");
    assert!(
        !text.to_ascii_lowercase().contains("authorization"),
        "{text}"
    );
}

#[tokio::test]
async fn base_url_comes_from_the_environment() {
    use supervisor::clients::cloudflare::{BASE_URL_ENV, DEFAULT_BASE_URL, base_url_from_env};
    // SAFETY: no other test reads or writes this variable, and nextest runs each test in its own
    // process.
    unsafe { std::env::remove_var(BASE_URL_ENV) };
    assert_eq!(base_url_from_env(), DEFAULT_BASE_URL);
    assert_eq!(DEFAULT_BASE_URL, "https://api.cloudflare.com/client/v4");

    let fake = FakeCloudflare::start().await;
    let id = fake.add_zone(ZONE);
    // SAFETY: as above.
    unsafe { std::env::set_var(BASE_URL_ENV, fake.base_url()) };
    let url = base_url_from_env();
    // SAFETY: as above.
    unsafe { std::env::remove_var(BASE_URL_ENV) };
    assert_eq!(url, fake.base_url());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = CloudflareClient::new(&url, fake.token(), fast_policy()).expect("client");
    assert_eq!(c.zone_id_by_name(ZONE).await.expect("zone"), id);
}

// --- the fake's own contract ----------------------------------------------------------------------

async fn raw(
    fake: &FakeCloudflare,
    method: Method,
    path_and_query: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mut rb = http.request(method, format!("{}{path_and_query}", fake.base_url()));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON body");
    (status, headers, body)
}

fn first_error(body: &Value) -> (i64, String) {
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["result"], Value::Null, "{body}");
    let e = &body["errors"][0];
    (
        e["code"].as_i64().expect("code"),
        e["message"].as_str().expect("message").to_string(),
    )
}

#[tokio::test]
async fn fake_envelopes_pagination_bounds_and_rate_headers() {
    let (fake, zone) = fake_with_zone().await;
    for i in 0..150 {
        fake.add_record(
            &zone,
            json!({"type": "A", "name": format!("h{i}.example.com"), "content": "192.0.2.1", "ttl": 1}),
        );
    }
    let (status, headers, body) = raw(
        &fake,
        Method::GET,
        &format!("/zones/{zone}/dns_records"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["errors"], json!([]));
    assert_eq!(body["messages"], json!([]));
    assert_eq!(
        body["result_info"],
        json!({"page": 1, "per_page": 100, "count": 100, "total_count": 150, "total_pages": 2})
    );
    let record = &body["result"][0];
    for field in [
        "id",
        "type",
        "name",
        "content",
        "proxiable",
        "proxied",
        "ttl",
        "settings",
        "meta",
        "comment",
        "tags",
        "created_on",
        "modified_on",
    ] {
        assert!(record.get(field).is_some(), "{field} missing in {record}");
    }
    assert_eq!(headers["x-ratelimit-limit"], "1200");
    assert_eq!(headers["x-ratelimit-remaining"], "1199");

    let (_, _, body) = raw(
        &fake,
        Method::GET,
        &format!("/zones/{zone}/dns_records?page=2&per_page=100"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(body["result"].as_array().expect("array").len(), 50);

    for bad in ["per_page=0", "per_page=5000001", "page=0", "per_page=abc"] {
        let (status, _, body) = raw(
            &fake,
            Method::GET,
            &format!("/zones/{zone}/dns_records?{bad}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(first_error(&body).0, 1001, "{bad}");
    }
    for (q, want) in [
        ("per_page=4", 400),
        ("per_page=51", 400),
        ("per_page=5", 200),
        ("per_page=50", 200),
    ] {
        let (status, _, _) = raw(
            &fake,
            Method::GET,
            &format!("/zones?{q}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, want, "{q}");
    }
    let (_, _, body) = raw(&fake, Method::GET, "/zones", Some(TOKEN), None).await;
    assert_eq!(body["result_info"]["per_page"], json!(20));
    let (_, _, body) = raw(
        &fake,
        Method::GET,
        "/zones?name=ends_with:.com",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(body["result"][0]["name"], json!(ZONE));

    fake.set_rate_limit(1, Duration::from_secs(30));
    let (status, _, _) = raw(&fake, Method::GET, "/zones", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let (status, headers, body) = raw(&fake, Method::GET, "/zones", Some(TOKEN), None).await;
    assert_eq!(status, 429);
    assert_eq!(first_error(&body).0, 971);
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert!(headers.contains_key("x-ratelimit-reset"));
}

#[tokio::test]
async fn fake_rejects_what_the_api_rejects() {
    let (fake, zone) = fake_with_zone().await;
    let records = format!("/zones/{zone}/dns_records");

    let (status, _, body) = raw(&fake, Method::GET, &records, None, None).await;
    assert_eq!((status, first_error(&body).0), (401, 10000));
    let (status, _, body) = raw(&fake, Method::GET, &records, Some("nope"), None).await;
    assert_eq!((status, first_error(&body).0), (403, 10000));

    let (status, _, body) = raw(
        &fake,
        Method::GET,
        "/zones/ffffffffffffffffffffffffffffffff/dns_records",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((status, first_error(&body).0), (404, 7003));
    let (status, _, body) = raw(&fake, Method::GET, "/nowhere", Some(TOKEN), None).await;
    assert_eq!((status, first_error(&body).0), (404, 7000));
    let (status, _, body) = raw(
        &fake,
        Method::PATCH,
        &format!("{records}/abc"),
        Some(TOKEN),
        Some(json!({})),
    )
    .await;
    assert_eq!((status, first_error(&body).0), (404, 81044));

    let cases = [
        (
            json!({"type": "CNAME", "name": "a.example.com", "content": "t.example.net", "ttl": "300"}),
            9207,
            "`ttl` must be a number",
        ),
        (
            json!({"type": "CNAME", "name": "a.example.com", "content": "t.example.net", "ttl": 1, "proxied": "yes"}),
            9207,
            "`proxied` must be a boolean",
        ),
        (
            json!({"type": "CNAME", "name": "a.example.com", "content": "t.example.net"}),
            9207,
            "`ttl` is required",
        ),
        (
            json!({"type": "CNAME", "name": "a.example.com", "ttl": 1}),
            9207,
            "`content` is required",
        ),
        (
            json!({"type": "A", "name": "a.example.com", "content": "not-an-ip", "ttl": 1}),
            9005,
            "valid IPv4",
        ),
        (
            json!({"type": "CNAME", "name": "a.example.com", "content": "a.example.com", "ttl": 1}),
            9007,
            "cannot point to itself",
        ),
        (
            json!({"type": "BOGUS", "name": "a.example.com", "content": "x", "ttl": 1}),
            9020,
            "Invalid DNS record type",
        ),
        (
            json!({"type": "MX", "name": "example.com", "content": "mx.example.net", "ttl": 1}),
            9207,
            "`priority` is required",
        ),
        (
            json!({"type": "CNAME", "name": "a.b*.example.com", "content": "t.example.net", "ttl": 1}),
            9000,
            "invalid label",
        ),
        (
            json!({"type": "CNAME", "name": "a.example.com", "content": "t.example.net", "ttl": 1, "comment": "x".repeat(101)}),
            9101,
            "limit is 100",
        ),
        (
            json!(["not", "an", "object"]),
            9207,
            "expected a JSON object",
        ),
    ];
    for (body, code, message) in cases {
        let (status, _, resp) = raw(
            &fake,
            Method::POST,
            &records,
            Some(TOKEN),
            Some(body.clone()),
        )
        .await;
        let (got_code, got_message) = first_error(&resp);
        assert_eq!((status, got_code), (400, code), "{body} → {resp}");
        assert!(got_message.contains(message), "{body} → {got_message}");
    }
    // Unknown fields are ignored; `@` is the apex; names are stored lower case without the dot.
    let (status, _, resp) = raw(
        &fake,
        Method::POST,
        &records,
        Some(TOKEN),
        Some(json!({"type": "A", "name": "@", "content": "192.0.2.7", "ttl": 60, "unknown": 1})),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["result"]["name"], json!(ZONE));
    let (status, _, resp) = raw(
        &fake,
        Method::POST,
        &records,
        Some(TOKEN),
        Some(json!({"type": "AAAA", "name": "V6.Example.COM.", "content": "2001:DB8:0:0::1", "ttl": 1})),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["result"]["name"], json!("v6.example.com"));
    assert_eq!(resp["result"]["content"], json!("2001:db8::1"));
    assert_eq!(fake.records(&zone).len(), 2);

    let (status, _, resp) = raw(
        &fake,
        Method::POST,
        &format!("{records}/batch"),
        Some(TOKEN),
        Some(json!({"deletes": [{}]})),
    )
    .await;
    assert_eq!((status, first_error(&resp).0), (400, 9207));
    assert_eq!(
        resp["errors"][0]["source"]["pointer"],
        json!("/deletes/0/id")
    );
}
