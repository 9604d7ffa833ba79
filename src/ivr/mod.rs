//! Dialplans and the engines that run them, sans-IO: the per-call key
//! menu and the escalation scheduler.

pub mod dialplan;
mod dialplan_file;
pub mod escalation;
pub mod inputs;
pub mod menu;
pub mod outcome;
pub mod pin;
#[cfg(test)]
mod pin_menu_tests;
pub mod player;
pub mod registry;
#[cfg(test)]
mod tests;
pub mod window;
