//! What a run's clusters used and what that cost: the instance groups each
//! cluster record carries, its instance-hours, and an estimate from the
//! settings' price table (`[cost]`, reference/settings.md; the computation
//! is explained once in guide/cost.md).
//!
//! Instance-hours are computed, never guessed: count × hours for each group
//! whose instance type is known, over the time the record covers (from its
//! launch to its end: terminated, left up, found gone; now while it may be
//! up). A cluster whose instances are unknown, or an instance type with no
//! price, is reported as unknown, never counted as zero.

use crate::record::{ClusterRecord, RecordId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How instances are bought; prices differ per market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Market {
    /// The list price.
    OnDemand,
    /// EC2 spot instances.
    Spot,
    /// Google's preemptible (spot) VMs.
    Preemptible,
}

impl Market {
    /// The name in settings and JSON (`on_demand`).
    pub fn as_str(self) -> &'static str {
        match self {
            Market::OnDemand => "on_demand",
            Market::Spot => "spot",
            Market::Preemptible => "preemptible",
        }
    }

    /// Parses the name in settings.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "on_demand" => Market::OnDemand,
            "spot" => Market::Spot,
            "preemptible" => Market::Preemptible,
            _ => return None,
        })
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Instances of one type in one role (EMR's MASTER group, Dataproc's
/// workers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceGroup {
    /// The backend's role name, e.g. `MASTER`, `workers`.
    pub role: String,
    /// The instance or machine type, e.g. `m5.xlarge`, `n1-standard-4`.
    pub instance_type: String,
    /// How they are bought.
    pub market: Market,
    /// How many.
    pub count: u32,
}

/// What a cluster record knows of the cluster's size and billed time.
/// Stored with the record; every field is optional, so records written
/// before it existed read as "unknown".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterUsage {
    /// The cluster's instances as launched; `None` when the backend does not
    /// say (an instance fleet, Qubole, HDInsight), empty for the local
    /// cluster (no instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceGroup>>,
    /// When the cluster stopped counting for this record: terminated, left
    /// up for others, found gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// What the backend reports itself, in its own unit: EMR's
    /// `NormalizedInstanceHours` (m1.small-hours; EMR rounds each instance
    /// up to whole hours), read when the cluster is terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized_instance_hours: Option<f64>,
}

/// Instance-hours of one instance type in one market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceHours {
    /// The instance or machine type.
    pub instance_type: String,
    /// How it is bought.
    pub market: Market,
    /// Instances × hours.
    pub instance_hours: f64,
}

impl ClusterRecord {
    /// The time this record bills: from launch to its end, or to `now`
    /// while the cluster may be up (a record in a final state written
    /// before `ended_at` existed ends at its last update).
    pub fn billed_hours(&self, now: DateTime<Utc>) -> f64 {
        let end = match self.usage.ended_at {
            Some(at) => at,
            None if self.state.may_be_up() => now,
            None => self.updated_at,
        };
        let millis = (end - self.launched_at).num_milliseconds().max(0);
        millis as f64 / 3_600_000.0
    }

    /// Instance-hours per instance type and market, or `None` when the
    /// cluster's instances are unknown.
    pub fn instance_hours(&self, now: DateTime<Utc>) -> Option<Vec<InstanceHours>> {
        let hours = self.billed_hours(now);
        let groups = self.usage.instances.as_ref()?;
        Some(
            groups
                .iter()
                .map(|g| InstanceHours {
                    instance_type: g.instance_type.clone(),
                    market: g.market,
                    instance_hours: f64::from(g.count) * hours,
                })
                .collect(),
        )
    }
}

/// The `[cost]` settings: prices per instance-hour, by instance type and
/// market.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// The currency of every price (`USD` unless set).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// `"TYPE"` (on-demand) or `"TYPE:MARKET"` → price per instance-hour.
    #[serde(default)]
    pub prices: BTreeMap<String, f64>,
}

fn default_currency() -> String {
    "USD".to_string()
}

/// A problem with one `[cost.prices]` entry: its key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceProblem {
    /// The entry's key, as written.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl PriceTable {
    /// The first entry that is not a valid price, if any: a market suffix
    /// that is not `on_demand`, `spot` or `preemptible`, an empty type, a
    /// price that is negative or not finite.
    pub fn problem(&self) -> Option<PriceProblem> {
        if self.currency.trim().is_empty() {
            return Some(PriceProblem {
                key: "currency".into(),
                message: "[cost] currency must not be empty".into(),
            });
        }
        self.prices.iter().find_map(|(key, price)| {
            let message = match key.split_once(':') {
                _ if !price.is_finite() || *price < 0.0 => format!(
                    "[cost.prices] \"{key}\" = {price}: a price per instance-hour is a number of at least 0"
                ),
                Some((ty, market)) if ty.is_empty() || Market::parse(market).is_none() => format!(
                    "[cost.prices] \"{key}\": write \"INSTANCE_TYPE\" (on-demand) or \"INSTANCE_TYPE:MARKET\" with MARKET one of on_demand, spot, preemptible"
                ),
                None if key.is_empty() => {
                    "[cost.prices] an instance type must not be empty".to_string()
                }
                _ => return None,
            };
            Some(PriceProblem {
                key: key.clone(),
                message,
            })
        })
    }

    /// The price of an instance-hour of `instance_type` in `market`: the
    /// `TYPE:MARKET` entry, or for on-demand the bare `TYPE` one.
    pub fn price(&self, instance_type: &str, market: Market) -> Option<f64> {
        self.prices
            .get(&format!("{instance_type}:{market}"))
            .or_else(|| {
                (market == Market::OnDemand)
                    .then(|| self.prices.get(instance_type))
                    .flatten()
            })
            .copied()
    }
}

/// The estimated cost of some instance-hours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    /// The price table's currency.
    pub currency: String,
    /// The cost of the instance-hours with a price.
    pub amount: f64,
    /// Instance-hours of types with no price in the table: their cost is
    /// unknown, not zero.
    pub unpriced: Vec<InstanceHours>,
}

/// What some cluster records (a run's, a flow's) used and cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageSummary {
    /// How many cluster records it covers.
    pub clusters: usize,
    /// The sum of `by_instance`: instance-hours of the clusters whose
    /// instances are known.
    pub instance_hours: f64,
    /// Instance-hours per instance type and market.
    pub by_instance: Vec<InstanceHours>,
    /// Clusters whose instances are unknown (`kind NAME (id)`): their
    /// instance-hours and cost are unknown.
    pub unknown_clusters: Vec<String>,
    /// The sum of what backends reported themselves (EMR's normalized
    /// instance hours), when any did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized_instance_hours: Option<f64>,
    /// The estimate, when the settings have a price table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

impl UsageSummary {
    /// Sums `records` as of `now`, priced by `prices` when given.
    pub fn of<'a>(
        records: impl IntoIterator<Item = &'a ClusterRecord>,
        prices: Option<&PriceTable>,
        now: DateTime<Utc>,
    ) -> UsageSummary {
        let mut clusters = 0;
        let mut hours: BTreeMap<(String, Market), f64> = BTreeMap::new();
        let mut unknown_clusters = Vec::new();
        let mut normalized: Option<f64> = None;
        for record in records {
            clusters += 1;
            if let Some(n) = record.usage.normalized_instance_hours {
                *normalized.get_or_insert(0.0) += n;
            }
            match record.instance_hours(now) {
                Some(lines) => {
                    for line in lines {
                        *hours.entry((line.instance_type, line.market)).or_default() +=
                            line.instance_hours;
                    }
                }
                None => unknown_clusters.push(record.handle.to_string()),
            }
        }
        let by_instance: Vec<InstanceHours> = hours
            .into_iter()
            .map(|((instance_type, market), instance_hours)| InstanceHours {
                instance_type,
                market,
                instance_hours,
            })
            .collect();
        let cost = prices.map(|table| {
            let mut amount = 0.0;
            let mut unpriced = Vec::new();
            for line in &by_instance {
                match table.price(&line.instance_type, line.market) {
                    Some(price) => amount += price * line.instance_hours,
                    None => unpriced.push(line.clone()),
                }
            }
            Cost {
                currency: table.currency.clone(),
                amount,
                unpriced,
            }
        });
        UsageSummary {
            clusters,
            instance_hours: by_instance.iter().map(|l| l.instance_hours).sum(),
            by_instance,
            unknown_clusters,
            normalized_instance_hours: normalized,
            cost,
        }
    }

    /// True when there is nothing to say: no cluster with instances (the
    /// local cluster has none) and none unknown.
    pub fn is_empty(&self) -> bool {
        self.by_instance.is_empty() && self.unknown_clusters.is_empty()
    }

    /// `1.70 instance-hours, ~$0.52`, with what is unknown named:
    /// `~$0.52 + unknown (no price for m5.2xlarge spot, 1.00 instance-hours)`.
    pub fn text(&self) -> String {
        let mut text = format!("{:.2} instance-hours", self.instance_hours);
        if !self.unknown_clusters.is_empty() {
            text.push_str(&format!(
                " + unknown ({} with unknown instances)",
                self.unknown_clusters.join(", ")
            ));
        }
        if let Some(cost) = &self.cost {
            text.push_str(&format!(", ~{}", money(cost.amount, &cost.currency)));
            if !cost.unpriced.is_empty() || !self.unknown_clusters.is_empty() {
                let unpriced: Vec<String> = cost
                    .unpriced
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {}, {:.2} instance-hours",
                            l.instance_type, l.market, l.instance_hours
                        )
                    })
                    .collect();
                if unpriced.is_empty() {
                    text.push_str(" + unknown");
                } else {
                    text.push_str(&format!(
                        " + unknown (no price for {})",
                        unpriced.join("; ")
                    ));
                }
            }
        }
        text
    }
}

/// What one flow (a name and timeperiod) used: in all, and per run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowUsage {
    /// Every run's clusters together.
    pub flow: UsageSummary,
    /// Each run's clusters, by run id (runs with no cluster record are
    /// absent).
    pub runs: BTreeMap<RecordId, UsageSummary>,
}

impl FlowUsage {
    /// Sums the cluster `records` of one flow as of `now`, per run and in
    /// all, priced by `prices` when given.
    pub fn of(records: &[ClusterRecord], prices: Option<&PriceTable>, now: DateTime<Utc>) -> Self {
        let mut by_run: BTreeMap<RecordId, Vec<&ClusterRecord>> = BTreeMap::new();
        for record in records {
            by_run.entry(record.run.clone()).or_default().push(record);
        }
        FlowUsage {
            flow: UsageSummary::of(records, prices, now),
            runs: by_run
                .into_iter()
                .map(|(run, records)| (run, UsageSummary::of(records, prices, now)))
                .collect(),
        }
    }
}

/// `$0.52`, `€0.52`, else `0.52 CHF`.
fn money(amount: f64, currency: &str) -> String {
    match currency {
        "USD" => format!("${amount:.2}"),
        "EUR" => format!("€{amount:.2}"),
        "GBP" => format!("£{amount:.2}"),
        other => format!("{amount:.2} {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterHandle;
    use crate::record::ClusterState;
    use chrono::TimeDelta;

    fn record(
        instances: Option<Vec<InstanceGroup>>,
        minutes: i64,
        state: ClusterState,
    ) -> ClusterRecord {
        let launched_at = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .to_utc();
        let ended = launched_at + TimeDelta::minutes(minutes);
        ClusterRecord {
            id: None,
            flow_name: "f".into(),
            timeperiod: "2026120700".parse().unwrap(),
            run: RecordId::from(1),
            handle: ClusterHandle {
                kind: "emr".into(),
                name: "emr-0".into(),
                backend_id: "j-1".into(),
                reused: false,
                details: Default::default(),
            },
            state,
            launched_at,
            updated_at: ended,
            message: None,
            usage: ClusterUsage {
                instances,
                ended_at: (!state.may_be_up()).then_some(ended),
                normalized_instance_hours: None,
            },
        }
    }

    fn group(role: &str, ty: &str, market: Market, count: u32) -> InstanceGroup {
        InstanceGroup {
            role: role.into(),
            instance_type: ty.into(),
            market,
            count,
        }
    }

    #[test]
    fn groups_times_hours_times_prices() {
        let r = record(
            Some(vec![
                group("MASTER", "m5.xlarge", Market::OnDemand, 1),
                group("CORE", "m5.xlarge", Market::Spot, 4),
            ]),
            90,
            ClusterState::Terminated,
        );
        let table = PriceTable {
            currency: "USD".into(),
            prices: BTreeMap::from([("m5.xlarge".into(), 0.2), ("m5.xlarge:spot".into(), 0.05)]),
        };
        let now = r.launched_at + TimeDelta::hours(10);
        let s = UsageSummary::of([&r], Some(&table), now);
        assert_eq!(s.instance_hours, 7.5);
        assert_eq!(s.cost.as_ref().unwrap().amount, 1.5 * 0.2 + 6.0 * 0.05);
        assert_eq!(s.text(), "7.50 instance-hours, ~$0.60");
    }

    #[test]
    fn a_missing_price_or_unknown_instances_is_unknown_not_zero() {
        let priced = record(
            Some(vec![group("MASTER", "m5.xlarge", Market::OnDemand, 1)]),
            60,
            ClusterState::Terminated,
        );
        let spot = record(
            Some(vec![group("CORE", "m5.xlarge", Market::Spot, 2)]),
            30,
            ClusterState::Terminated,
        );
        let table = PriceTable {
            currency: "EUR".into(),
            prices: BTreeMap::from([("m5.xlarge".into(), 0.5)]),
        };
        let now = Utc::now();
        let s = UsageSummary::of([&priced, &spot], Some(&table), now);
        let cost = s.cost.clone().unwrap();
        assert_eq!(cost.amount, 0.5);
        assert_eq!(cost.unpriced.len(), 1);
        assert_eq!(cost.unpriced[0].instance_hours, 1.0);
        assert_eq!(
            s.text(),
            "2.00 instance-hours, ~€0.50 + unknown (no price for m5.xlarge spot, 1.00 instance-hours)"
        );
        let unknown = record(None, 60, ClusterState::Terminated);
        let s = UsageSummary::of([&priced, &unknown], Some(&table), now);
        assert_eq!(s.unknown_clusters, ["emr cluster emr-0 (j-1)"]);
        assert!(s.text().contains("+ unknown"), "{}", s.text());
    }

    #[test]
    fn an_open_cluster_counts_until_now() {
        let r = record(
            Some(vec![group("workers", "n1-standard-4", Market::OnDemand, 2)]),
            0,
            ClusterState::Up,
        );
        let now = r.launched_at + TimeDelta::minutes(30);
        assert_eq!(UsageSummary::of([&r], None, now).instance_hours, 1.0);
    }

    #[test]
    fn bad_prices_are_named() {
        let table = |key: &str, price: f64| PriceTable {
            currency: "USD".into(),
            prices: BTreeMap::from([(key.to_string(), price)]),
        };
        assert_eq!(table("m5.xlarge:spot", 0.1).problem(), None);
        assert_eq!(
            table("m5.xlarge:reserved", 0.1).problem().unwrap().key,
            "m5.xlarge:reserved"
        );
        assert!(table("m5.xlarge", -1.0).problem().is_some());
        assert!(table(":spot", 1.0).problem().is_some());
        assert_eq!(
            table("n1:preemptible", 2.0).price("n1", Market::Preemptible),
            Some(2.0)
        );
        assert_eq!(table("n1", 2.0).price("n1", Market::Spot), None);
    }
}
