//! Decoding and validation against the contract: data-driven cases, the
//! contract's example events, round trips and arbitrary input.

use proptest::prelude::*;
use schemas::severity::Severity;
use schemas::*;

const EXAMPLES: &str = include_str!("data/examples.jsonl");

/// The example `patch.deployment.v1` (succeeded) as a JSON value to mutate.
fn example(event_type: &str) -> serde_json::Value {
    EXAMPLES
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("examples are JSON"))
        .find(|event| event["type"] == event_type)
        .expect("an example of every type")
}

/// Applies `edit` to the example of `event_type` and checks the errors reported.
fn check(event_type: &str, edit: impl FnOnce(&mut serde_json::Value), expected: &[&str]) {
    let mut event = example(event_type);
    edit(&mut event);
    let line = serde_json::to_string(&event).expect("serializes");
    let actual: Vec<String> = match decode(line.as_bytes()) {
        Ok(_) => vec![],
        Err(invalid) => invalid.errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(actual, expected, "for {line}");
}

#[test]
fn every_contract_example_is_valid() {
    let mut types = std::collections::BTreeSet::new();
    for line in EXAMPLES.lines() {
        let event = decode(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        types.insert(event.event_type());
        assert_eq!(event.subject, event.data.subject());
    }
    assert_eq!(types.len(), EventType::ALL.len(), "one example of each type");
}

#[test]
fn reports_each_problem_with_its_path() {
    check(
        "posture.assessment.v1",
        |e| e["data"]["trust_score"] = 140.into(),
        &["data.trust_score: must be between 0 and 100, got 140"],
    );
    check(
        "patch.deployment.v1",
        |e| e["type"] = "patch.deploy.v1".into(),
        &[r#"type: unknown event type "patch.deploy.v1""#],
    );
    check(
        "flow.observation.v1",
        |e| {
            e["data"]["dst_port"] = 70000.into();
            e["data"]["connections"] = 0.into();
            e["data"]["intended_action"] = "maybe".into();
            e["time"] = "yesterday".into();
        },
        &[
            r#"time: must be an RFC 3339 timestamp with offset, got "yesterday""#,
            "data.dst_port: must be between 0 and 65535, got 70000",
            r#"data.intended_action: must be one of allow, deny, unknown, got "maybe""#,
            "data.connections: must be at least 1, got 0",
        ],
    );
    check(
        "canary.stage.v1",
        |e| {
            e["data"]["stage"] = 1.5.into();
            e["data"]["verdict"] = serde_json::Value::Null;
            e["data"].as_object_mut().expect("object").remove("patch_id");
        },
        &[
            "data.patch_id: is required",
            "data.stage: must be an integer, got 1.5",
            "data.verdict: is required, got null",
        ],
    );
    check(
        "patch.release.v1",
        |e| {
            e["data"]["fixes_cves"] = serde_json::json!(["CVE-2026-31337", "GHSA-1234", 7]);
            e["data"]["artifact_sha256"] = "abc".into();
        },
        &[
            r#"data.fixes_cves[1]: must be a CVE id like CVE-2026-12345, got "GHSA-1234""#,
            "data.fixes_cves[2]: must be a string, got 7",
            r#"data.artifact_sha256: must be 64 hexadecimal characters, got "abc""#,
        ],
    );
    check(
        "vuln.intel.v1",
        |e| {
            e["data"]["cvss_base"] = "8.8".into();
            e["data"]["epss"] = (-0.1).into();
            e["data"]["kev_due_date"] = "2026-11-31".into();
            e["data"]["kev"] = "yes".into();
        },
        &[
            r#"data.cvss_base: must be a number, got "8.8""#,
            "data.epss: must be between 0 and 1, got -0.1",
            r#"data.kev: must be true or false, got "yes""#,
            r#"data.kev_due_date: must be a calendar date YYYY-MM-DD, got "2026-11-31""#,
        ],
    );
    check(
        "asset.inventory.v1",
        |e| {
            e["specversion"] = "0.3".into();
            e["id"] = "".into();
            e["subject"] = "gw-08".into();
            e["data"]["labels"] = serde_json::json!({"site": 3});
        },
        &[
            r#"specversion: must be "1.0", got "0.3""#,
            "id: must not be empty",
            "data.labels.site: must be a string, got 3",
            r#"subject: must equal data.asset_id ("gw-07"), got "gw-08""#,
        ],
    );
    check(
        "asset.inventory.v1",
        |e| e["subject"] = "gw-08".into(),
        &[r#"subject: must equal data.asset_id ("gw-07"), got "gw-08""#],
    );
    check("vuln.finding.v1", |e| e["data"] = serde_json::json!([1]), &["data: must be a JSON object, got an array"]);
    check("vuln.finding.v1", |e| e["id"] = "x".repeat(129).into(), &["id: must be at most 128 characters, got 129"]);
}

#[test]
fn unknown_fields_are_ignored_and_defaults_apply() {
    check(
        "asset.inventory.v1",
        |e| {
            e["extension"] = "anything".into();
            e["data"]["future_field"] = serde_json::json!({"nested": [1, 2]});
            e["data"].as_object_mut().expect("object").remove("managed");
        },
        &[],
    );
    let mut event = example("asset.inventory.v1");
    event["data"].as_object_mut().expect("object").remove("managed");
    let decoded = decode(event.to_string().as_bytes()).expect("valid");
    let EventData::AssetInventory(inventory) = decoded.data else { panic!("wrong type") };
    assert!(inventory.managed, "managed defaults to true");
}

#[test]
fn whole_message_problems() {
    let reason = |bytes: &[u8]| decode(bytes).expect_err("invalid").to_string();
    assert_eq!(reason(b"[1,2]"), "must be a JSON object (a CloudEvent), got an array");
    assert!(reason(b"{\"id\": ").starts_with("not valid JSON: EOF while parsing"));
    assert_eq!(reason(b"{\"id\": \"\xff\"}"), "not valid UTF-8: invalid byte at offset 8");
    assert!(reason(&[b'['; 10_000]).starts_with("not valid JSON: recursion limit exceeded"));
}

#[test]
fn a_key_given_twice_at_any_depth_is_invalid() {
    let example = example("asset.inventory.v1").to_string();
    let errors = |line: &str| decode(line.as_bytes()).expect_err("duplicate keys").to_string();
    // In data: the first value would win in one parser, the last in another.
    let twice = example.replacen("\"asset_id\":\"gw-07\"", "\"asset_id\":\"gw-07\",\"asset_id\":\"gw-99\"", 1);
    assert_ne!(twice, example, "the example has the field");
    assert!(errors(&twice).contains("data.asset_id: the key appears 2 times"), "{}", errors(&twice));
    // In the envelope, three times; and inside labels.
    let thrice = example.replacen("\"source\":", "\"source\":\"a\",\"source\":\"b\",\"source\":", 1);
    assert!(errors(&thrice).contains("source: the key appears 3 times"), "{}", errors(&thrice));
    let labelled = example.replacen("\"site\":\"lyon\"", "\"site\":\"lyon\",\"site\":\"nice\"", 1);
    assert_ne!(labelled, example, "the example has labels");
    assert!(errors(&labelled).contains("data.labels.site: the key appears 2 times"), "{}", errors(&labelled));
}

#[test]
fn a_leap_second_is_a_valid_time() {
    let mut event = example("asset.inventory.v1");
    event["time"] = serde_json::json!("2016-12-31T23:59:60Z");
    let decoded = decode(event.to_string().as_bytes()).expect("second 60 is RFC 3339");
    assert_eq!(decoded.time.to_string(), "2017-01-01T00:00:00Z");
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._:/-]{1,24}"
}

fn opt<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(strategy)
}

fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0i64..4_102_444_800_000_000).prop_map(Timestamp::from_micros)
}

fn cve() -> impl Strategy<Value = String> {
    "CVE-20[0-9]{2}-[0-9]{4,7}"
}

fn sha() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

fn score(max: f64) -> impl Strategy<Value = f64> {
    0.0..=max
}

fn data() -> impl Strategy<Value = EventData> {
    prop_oneof![
        (
            text(),
            opt(text()),
            pick(Environment::ALL),
            pick(Criticality::ALL),
            any::<bool>(),
            text(),
            opt(text()),
            any::<bool>(),
            proptest::collection::btree_map(text(), text(), 0..3)
        )
            .prop_map(
                |(
                    asset_id,
                    hostname,
                    environment,
                    criticality,
                    internet_exposed,
                    segment,
                    os_version,
                    managed,
                    labels,
                )| {
                    EventData::AssetInventory(AssetInventory {
                        asset_id,
                        hostname,
                        environment,
                        criticality,
                        internet_exposed,
                        segment,
                        os_family: None,
                        os_version,
                        managed,
                        labels,
                    })
                }
            ),
        (text(), cve(), pick(FindingStatus::ALL), opt(text()), opt(score(10.0)), opt(pick(Severity::ALL))).prop_map(
            |(asset_id, cve_id, status, package, scanner_cvss, scanner_severity)| {
                EventData::VulnFinding(VulnFinding {
                    asset_id,
                    cve_id,
                    status,
                    scanner: package.clone(),
                    package,
                    installed_version: None,
                    fixed_version: None,
                    scanner_cvss,
                    scanner_severity,
                })
            }
        ),
        (
            text(),
            text(),
            text(),
            pick(DeploymentPhase::ALL),
            opt(text()),
            opt(pick(Ring::ALL)),
            opt(sha()),
            opt(any::<bool>())
        )
            .prop_map(
                |(deployment_id, asset_id, patch_id, phase, rollout_id, ring, artifact_sha256, signature_verified)| {
                    EventData::PatchDeployment(PatchDeployment {
                        deployment_id,
                        asset_id,
                        patch_id,
                        phase,
                        rollout_id,
                        ring,
                        error_class: None,
                        artifact_sha256,
                        signature_verified,
                    })
                }
            ),
        (text(), score(100.0), any::<bool>(), opt(pick(PostureTrigger::ALL)), proptest::collection::vec(text(), 0..3))
            .prop_map(|(asset_id, trust_score, compliant, trigger, failed_checks)| {
                EventData::PostureAssessment(PostureAssessment {
                    asset_id,
                    trust_score,
                    compliant,
                    trigger,
                    deployment_id: None,
                    failed_checks,
                })
            }),
        (text(), text(), pick(Decision::ALL), text(), opt(score(100.0))).prop_map(
            |(decision_id, asset_id, decision, policy_id, trust_score)| {
                EventData::PolicyDecision(PolicyDecision {
                    decision_id,
                    asset_id,
                    decision,
                    policy_id,
                    policy_version: None,
                    subject_id: None,
                    resource: None,
                    trust_score,
                })
            }
        ),
        (text(), text(), any::<u32>(), pick(Verdict::ALL), opt(any::<u64>()), opt(pick(CanaryAction::ALL))).prop_map(
            |(rollout_id, patch_id, stage, verdict, cohort_size, action)| {
                EventData::CanaryStage(CanaryStage {
                    rollout_id,
                    patch_id,
                    stage,
                    verdict,
                    cohort_size,
                    failed_checks: None,
                    action,
                })
            }
        ),
        (
            text(),
            text(),
            any::<u16>(),
            pick(FlowAction::ALL),
            pick(IntendedAction::ALL),
            opt(pick(EnforcementMode::ALL)),
            1u64..
        )
            .prop_map(
                |(
                    src_segment,
                    dst_segment,
                    dst_port,
                    enforced_action,
                    intended_action,
                    enforcement_mode,
                    connections,
                )| {
                    EventData::FlowObservation(FlowObservation {
                        src_segment,
                        dst_segment,
                        dst_port,
                        protocol: None,
                        enforced_action,
                        intended_action,
                        enforcement_mode,
                        connections,
                        src_asset_id: None,
                        dst_asset_id: None,
                    })
                }
            ),
        (
            cve(),
            timestamp(),
            score(10.0),
            opt(score(1.0)),
            any::<bool>(),
            opt((0i32..40_000).prop_map(Date)),
            opt(pick(Exploitation::ALL))
        )
            .prop_map(|(cve_id, published_at, cvss_base, epss, kev, kev_due_date, exploitation)| {
                EventData::VulnIntel(VulnIntel {
                    cve_id,
                    published_at,
                    cvss_base,
                    cvss_version: None,
                    epss,
                    epss_percentile: None,
                    kev,
                    kev_date_added: None,
                    kev_due_date,
                    exploitation,
                    automatable: None,
                    technical_impact: None,
                })
            }),
        (text(), text(), text(), timestamp(), proptest::collection::vec(cve(), 1..4), opt(sha()), opt(any::<bool>()))
            .prop_map(|(patch_id, vendor, product, released_at, fixes_cves, artifact_sha256, signed)| {
                EventData::PatchRelease(PatchRelease {
                    patch_id,
                    vendor,
                    product,
                    released_at,
                    fixes_cves,
                    artifact_sha256,
                    signed,
                })
            }),
        (
            cve(),
            (0i32..40_000).prop_map(Date),
            opt((0i32..40_000).prop_map(Date)),
            opt(text()),
            opt(pick(RansomwareUse::ALL))
        )
            .prop_map(|(cve_id, date_added, due_date, vendor, ransomware_use)| {
                EventData::VulnKev(VulnKev {
                    cve_id,
                    date_added,
                    due_date,
                    product: vendor.clone(),
                    vendor,
                    ransomware_use,
                })
            }),
        (cve(), score(1.0), opt(score(1.0)), (0i32..40_000).prop_map(Date), opt(text())).prop_map(
            |(cve_id, epss, percentile, score_date, model_version)| {
                EventData::VulnEpss(VulnEpss { cve_id, epss, percentile, score_date, model_version })
            }
        ),
    ]
}

fn event() -> impl Strategy<Value = CloudEvent> {
    ("[a-z0-9-]{1,40}", text(), timestamp(), data()).prop_map(|(id, source, time, data)| CloudEvent {
        id,
        source,
        time,
        subject: data.subject().to_owned(),
        data,
    })
}

proptest! {
    #[test]
    fn serialize_then_decode_round_trips(event in event()) {
        let line = serde_json::to_vec(&event).expect("serializes");
        prop_assert_eq!(decode(&line), Ok(event));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn never_panics_on_damaged_events(event in event(), cut in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let mut line = serde_json::to_vec(&event).expect("serializes");
        let idx = cut.index(line.len());
        let _ = decode(&line[..idx]);
        line[idx] = byte;
        if let Err(invalid) = decode(&line) {
            prop_assert!(!invalid.errors.is_empty());
        }
    }
}
