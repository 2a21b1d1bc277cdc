//! Evaluation of arrival detection against labelled real traces.

pub mod amazon;
pub mod eta;
pub mod profiles;
pub mod stops;
