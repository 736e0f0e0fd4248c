//! Stage 2: losses of the progressive schedule and the teacher-output cache.

pub mod cache;
pub mod loss;

pub use cache::TeacherCache;
