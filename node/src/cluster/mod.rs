pub mod driver;
pub mod election;
#[cfg(test)]
mod sim;
