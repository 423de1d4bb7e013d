package dev.distillery.runtime.distill;

import dev.distillery.kernels.distill.TeacherTargets;

/** One teacher of a batch: targets stored in host memory (a shard batch), or a model run in the process. */
public sealed interface TeacherSource {

    /** A batch's stored targets, in host memory (staged to the device by the session). */
    record Stored(TeacherTargets targets) implements TeacherSource {
    }

    /** A teacher run on the batch's tokens. */
    record Live(InProcessTeacher teacher) implements TeacherSource {
    }
}
