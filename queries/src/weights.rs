//! The priority score's weights (DOMAIN.md "Prioritization") and the
//! `priorities` view they fill in.

/// The `priorities` view (DOMAIN.md "Prioritization"), with `{now}` for the
/// lake's as-of time and the [`Weights`] as `{…_weight}` placeholders.
pub const PRIORITIES_SQL: &str = include_str!("../sql/priorities.sql");

/// The weights of the priority score; the defaults are DOMAIN.md's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Weights {
    /// `1 + epss × epss_weight`.
    pub epss: f64,
    /// For a CVE in the KEV catalog.
    pub kev: f64,
    /// For an internet-exposed asset.
    pub internet_exposed: f64,
    /// For an asset in the `edge` environment.
    pub edge: f64,
    /// By asset criticality.
    pub criticality_low: f64,
    /// By asset criticality.
    pub criticality_moderate: f64,
    /// By asset criticality.
    pub criticality_high: f64,
    /// The urgency term is `1 + clamp(elapsed share of the SLA, 0, max_urgency)`.
    pub max_urgency: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            epss: 4.0,
            kev: 2.0,
            internet_exposed: 1.5,
            edge: 1.2,
            criticality_low: 1.0,
            criticality_moderate: 1.5,
            criticality_high: 2.0,
            max_urgency: 2.0,
        }
    }
}

impl Weights {
    /// The `priorities` SQL with these weights and `now` filled in.
    pub fn priorities_sql(&self, now: &str) -> String {
        // `{:?}` keeps a decimal point (2.0, not 2): DataFusion reads it as a double.
        [
            ("{now}", now.to_owned()),
            ("{epss_weight}", format!("{:?}", self.epss)),
            ("{kev_weight}", format!("{:?}", self.kev)),
            ("{internet_exposed_weight}", format!("{:?}", self.internet_exposed)),
            ("{edge_weight}", format!("{:?}", self.edge)),
            ("{criticality_low_weight}", format!("{:?}", self.criticality_low)),
            ("{criticality_moderate_weight}", format!("{:?}", self.criticality_moderate)),
            ("{criticality_high_weight}", format!("{:?}", self.criticality_high)),
            ("{max_urgency}", format!("{:?}", self.max_urgency)),
        ]
        .iter()
        .fold(PRIORITIES_SQL.to_owned(), |sql, (placeholder, value)| sql.replace(placeholder, value))
    }
}
