//! The request mix of the mixed-load scenario and the weighted choice of
//! each request's kind.

use serde::Serialize;

/// The kinds of request in the mixed load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ProductView,
    Search,
    OrderList,
    ProfileRead,
    Login,
    Checkout,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::ProductView,
        Kind::Search,
        Kind::OrderList,
        Kind::ProfileRead,
        Kind::Login,
        Kind::Checkout,
    ];

    /// Reads are judged against the read latency target; logins and
    /// checkouts are not reads.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Kind::ProductView | Kind::Search | Kind::OrderList | Kind::ProfileRead
        )
    }
}

/// Integer weights per kind; a request's kind is picked from a uniform draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    weights: Vec<(Kind, u32)>,
    total: u32,
}

impl Mix {
    /// The issue's mix: 57% product views, 13% searches, 13% order listings,
    /// 9% profile reads, 4% logins, 4% checkouts.
    pub fn standard() -> Self {
        Self::new(vec![
            (Kind::ProductView, 57),
            (Kind::Search, 13),
            (Kind::OrderList, 13),
            (Kind::ProfileRead, 9),
            (Kind::Login, 4),
            (Kind::Checkout, 4),
        ])
    }

    pub fn new(weights: Vec<(Kind, u32)>) -> Self {
        let total = weights.iter().map(|(_, w)| *w).sum();
        Self { weights, total }
    }

    /// The fraction of requests of `kind`.
    pub fn share(&self, kind: Kind) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let weight: u32 = self
            .weights
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, w)| *w)
            .sum();
        f64::from(weight) / f64::from(self.total)
    }

    /// The kind for a uniform draw (any u32): the draw is reduced into
    /// `0..total` and the weights are laid end to end.
    pub fn pick(&self, draw: u32) -> Option<Kind> {
        if self.total == 0 {
            return None;
        }
        let mut point = draw % self.total;
        for &(kind, weight) in &self.weights {
            if point < weight {
                return Some(kind);
            }
            point -= weight;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_mix_has_the_issues_shares() {
        let mix = Mix::standard();
        assert!((mix.share(Kind::ProductView) - 0.57).abs() < 1e-9);
        assert!((mix.share(Kind::Search) - 0.13).abs() < 1e-9);
        assert!((mix.share(Kind::OrderList) - 0.13).abs() < 1e-9);
        assert!((mix.share(Kind::ProfileRead) - 0.09).abs() < 1e-9);
        assert!((mix.share(Kind::Login) - 0.04).abs() < 1e-9);
        assert!((mix.share(Kind::Checkout) - 0.04).abs() < 1e-9);
    }

    #[test]
    fn every_draw_in_a_full_cycle_picks_kinds_in_their_exact_proportions() {
        let mix = Mix::standard();
        let mut counts = std::collections::HashMap::new();
        for draw in 0..100 {
            *counts.entry(mix.pick(draw).expect("kind")).or_insert(0) += 1;
        }
        assert_eq!(counts[&Kind::ProductView], 57);
        assert_eq!(counts[&Kind::Search], 13);
        assert_eq!(counts[&Kind::OrderList], 13);
        assert_eq!(counts[&Kind::ProfileRead], 9);
        assert_eq!(counts[&Kind::Login], 4);
        assert_eq!(counts[&Kind::Checkout], 4);
    }

    #[test]
    fn large_draws_wrap_around_the_weights() {
        let mix = Mix::new(vec![(Kind::Login, 1), (Kind::Checkout, 1)]);
        assert_eq!(mix.pick(u32::MAX - 1), Some(Kind::Login));
        assert_eq!(mix.pick(u32::MAX), Some(Kind::Checkout));
    }

    #[test]
    fn an_empty_mix_picks_nothing() {
        assert_eq!(Mix::new(vec![]).pick(7), None);
        assert_eq!(Mix::new(vec![(Kind::Login, 0)]).pick(7), None);
    }

    #[test]
    fn only_views_searches_listings_and_profiles_are_reads() {
        let reads: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.is_read()).collect();
        assert_eq!(
            reads,
            vec![
                Kind::ProductView,
                Kind::Search,
                Kind::OrderList,
                Kind::ProfileRead
            ]
        );
    }
}
