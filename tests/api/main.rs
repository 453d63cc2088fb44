//! The integration suite: one binary, each test with its own real server and database.

mod bad_input;
mod helpers;
mod operator;
mod pockyt_story;
mod tidy;
