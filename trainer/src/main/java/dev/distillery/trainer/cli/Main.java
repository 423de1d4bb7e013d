package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.util.function.Function;

import dev.distillery.kernels.Backend;
import dev.distillery.kernels.Backends;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.trainer.data.TeacherShardFormat;
import dev.distillery.trainer.loop.StopRequests;
import dev.distillery.trainer.loop.TrainingLoop;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code java -jar trainer.jar <command>}: the Distillery command line. */
@Command(name = "trainer.jar",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = {
                "Distillery: knowledge distillation for the JVM.",
                "Trains a small GPT-style student to imitate a teacher's stored output distributions.",
                ""},
        subcommands = {DemoCommand.class, DistillCommand.class, TeacherCommand.class, TokenizeCommand.class, GenerateCommand.class,
                EvalCommand.class, ExportCommand.class, InspectCommand.class, SelftestCommand.class, CommandLine.HelpCommand.class},
        footer = {"", "Run 'java -jar trainer.jar <command> --help' for a command's options.",
                "Set DISTILLERY_DEBUG=1 to see stack traces."})
public final class Main implements Runnable {

    /** Exit status: a check failed (selftest) or the command failed. */
    public static final int EXIT_FAILED = 1;
    /** Exit status: bad command-line arguments. */
    public static final int EXIT_USAGE = 2;
    /** Exit status: the requested device is not available here. */
    public static final int EXIT_NO_DEVICE = 3;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    public static void main(String[] args) {
        StopRequests.install(Long.getLong(ChildJvm.LAUNCHER_PID, 0));
        System.exit(execute(args, new PrintWriter(System.out, true), new PrintWriter(System.err, true)));
    }

    /** Runs the command line with the given streams and returns the exit status (tests call this). */
    public static int execute(String[] args, PrintWriter out, PrintWriter err) {
        CommandLine cli = new CommandLine(new Main());
        // the closed sets of the flags, parsed here once, each with the names its users type
        cli.registerConverter(Backend.class, converter(Backend::parse));
        cli.registerConverter(TeacherTargets.Kind.class, converter(TeacherShardFormat::kind));
        cli.registerConverter(DType.class, converter(TeacherShardFormat::logitType));
        cli.setOut(out);
        cli.setErr(err);
        cli.setParameterExceptionHandler((ex, ignored) -> {
            // One clear line, not the whole usage text.
            ex.getCommandLine().getErr().println("error: " + ex.getMessage()
                    + " (see 'java -jar trainer.jar " + commandPath(ex.getCommandLine()) + "--help')");
            return EXIT_USAGE;
        });
        cli.setExecutionExceptionHandler((ex, commandLine, parseResult) -> {
            commandLine.getErr().println("error: " + describe(ex));
            if (ex instanceof Backends.UnavailableException) return EXIT_NO_DEVICE;
            if (ex instanceof TrainingLoop.StoppedBySignalException) return StopRequests.EXIT_STOPPED;
            if (System.getenv("DISTILLERY_DEBUG") != null) ex.printStackTrace(commandLine.getErr());
            return EXIT_FAILED;
        });
        return cli.execute(args);
    }

    /** A flag's parser as a converter whose error message is the parser's own. */
    private static <T> CommandLine.ITypeConverter<T> converter(Function<String, T> parse) {
        return value -> {
            try {
                return parse.apply(value);
            } catch (IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        };
    }

    private static String commandPath(CommandLine cl) {
        StringBuilder sb = new StringBuilder();
        for (CommandLine c = cl; c != null && c.getParent() != null; c = c.getParent()) sb.insert(0, c.getCommandName() + " ");
        return sb.toString();
    }

    /**
     * The line after "error: ". The file system's exceptions carry the path and, mostly, no reason
     * (a missing --tokens file printed as "error: val.bin"): they say what is wrong with the path.
     */
    static String describe(Throwable t) {
        if (t instanceof UncheckedIOException u && u.getCause() instanceof FileSystemException f) t = f;
        if (t instanceof FileSystemException f && f.getReason() == null && f.getFile() != null) {
            String what = switch (f) {
                case NoSuchFileException e -> "no such file or directory";
                case AccessDeniedException e -> "permission denied";
                case FileAlreadyExistsException e -> "already exists";
                case NotDirectoryException e -> "not a directory";
                case DirectoryNotEmptyException e -> "directory not empty";
                default -> f.getClass().getSimpleName();
            };
            return f.getFile() + (f.getOtherFile() == null ? "" : " -> " + f.getOtherFile()) + ": " + what;
        }
        String message = t.getMessage();
        return message == null || message.isBlank() ? t.getClass().getSimpleName() : message;
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = Main.class.getPackage().getImplementationVersion();
            return new String[]{"Distillery " + (v == null ? "(development build)" : v) + ", Java " + Runtime.version()};
        }
    }
}
