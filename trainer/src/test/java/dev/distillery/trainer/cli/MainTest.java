package dev.distillery.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import picocli.CommandLine;

class MainTest {

    private record Run(int status, String out, String err) {
    }

    private static Run run(String... args) {
        StringWriter out = new StringWriter(), err = new StringWriter();
        int status = Main.execute(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new Run(status, out.toString(), err.toString());
    }

    @Test
    void selftestQuickPassesAndPrintsTheTable() {
        Run r = run("selftest", "--quick", "--threads", "2", "--seed", "5");
        assertEquals(0, r.status(), r.out() + r.err());
        assertTrue(r.out().contains("softmaxCrossEntropy"), r.out());
        assertTrue(r.out().contains("0 failed"), r.out());
        assertTrue(r.out().contains("seed: 5"), r.out());
        // the bf16 GEMMs are checked where this CPU has them, and the header says why where it has not
        if (r.out().contains("gemmNN.bf16")) {
            assertTrue(r.out().matches("(?s).*\\d+ bf16 checks, \\d+ passed, 0 failed.*"), r.out());
        } else {
            assertTrue(r.out().contains("bf16: not checked: "), r.out());
        }
    }

    @Test
    void unknownOptionIsOneLineAndExitTwo() {
        Run r = run("selftest", "--bogus");
        assertEquals(Main.EXIT_USAGE, r.status());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(r.err().contains("--bogus") && r.err().contains("selftest --help"), r.err());
    }

    @Test
    void badEnumValueNamesTheChoices() {
        Run r = run("selftest", "--device", "tpu");
        assertEquals(Main.EXIT_USAGE, r.status());
        assertTrue(r.err().contains("auto, cpu, cuda"), r.err());
    }

    @Test
    void cudaWithoutBackendExitsWithTheNoDeviceCode() {
        Run r = run("selftest", "--device", "cuda");
        org.junit.jupiter.api.Assumptions.assumeFalse(dev.distillery.bindings.CudaDevices.probe().available(), "this machine has a CUDA device");
        assertEquals(Main.EXIT_NO_DEVICE, r.status());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(r.err().contains("libcuda.so.1") || r.err().contains("0 devices") || r.err().contains("cuInit"), r.err());
    }

    @Test
    void helpListsTheCommands() {
        Run r = run("--help");
        assertEquals(0, r.status());
        assertTrue(r.out().contains("selftest"), r.out());
    }

    /** The command lists show each command's first line: every command has a one-sentence header for it. */
    @Test
    void everyCommandListedHasAWholeSentence() {
        ArrayDeque<CommandLine> pending = new ArrayDeque<>(new CommandLine(new Main()).getSubcommands().values());
        int checked = 0;
        while (!pending.isEmpty()) {
            CommandLine c = pending.pop();
            pending.addAll(c.getSubcommands().values());
            if (c.getCommandName().equals("help")) continue;
            String[] header = c.getCommandSpec().usageMessage().header();
            String first = header.length > 0 ? header[0] : c.getCommandSpec().usageMessage().description()[0];
            assertTrue(first.endsWith("."), c.getCommandName() + ": \"" + first + "\"");
            checked++;
        }
        assertTrue(checked >= 11, "commands checked: " + checked);
    }

    /**
     * picocli starts a new line at every element of a description and wraps each at the terminal's
     * width; an element that stops mid-sentence left a ragged line in --help. So every element of
     * every command's and option's description is a whole paragraph or list item (empty, or ending
     * in '.', ';' or ':'), and the line after a ':' is a list item (indented) or a new sentence.
     */
    @Test
    void everyDescriptionIsMadeOfWholeParagraphs() {
        ArrayDeque<CommandLine> pending = new ArrayDeque<>(List.of(new CommandLine(new Main())));
        int checked = 0;
        while (!pending.isEmpty()) {
            CommandLine c = pending.pop();
            pending.addAll(c.getSubcommands().values());
            if (c.getCommandName().equals("help")) continue;   // picocli's own
            List<String[]> texts = new ArrayList<>();
            texts.add(c.getCommandSpec().usageMessage().description());
            for (CommandLine.Model.ArgSpec a : c.getCommandSpec().args()) texts.add(a.description());
            for (String[] text : texts) {
                for (int i = 0; i < text.length; i++) {
                    String line = text[i].strip(), where = c.getCommandName() + ": \"" + text[i] + "\"";
                    assertTrue(line.isEmpty() || line.endsWith(".") || line.endsWith(";") || line.endsWith(":"), where);
                    if (line.endsWith(":") && i + 1 < text.length) {
                        String next = text[i + 1];
                        assertTrue(next.startsWith("  ") || Character.isUpperCase(next.charAt(0)), where + " then \"" + next + "\"");
                    }
                    checked++;
                }
            }
        }
        assertTrue(checked >= 100, "descriptions checked: " + checked);
    }
}
