//! Evaluation of arrival detection against labelled real traces.

pub mod amazon;
pub mod profiles;
