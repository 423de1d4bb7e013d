package dev.distillery.trainer.tokenizer;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.stream.Stream;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.distillery.runtime.io.AtomicFileWriter;
import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.report.Progress;

/**
 * Encodes a corpus with an existing tokenizer into llm.c token files, streaming: documents are read
 * in pieces, encoded on a pool of threads, and appended in order, so a multi-GB corpus needs memory
 * for a few pieces, not for the text.
 *
 * <p>Documents: each {@code .txt} file is one document; each line of a {@code .jsonl} file is one,
 * its {@code "text"} field. A folder is read in natural file order. Every document is ended by the
 * tokenizer's EOS token ({@link Delimiter#EOS}) or started by its BOS token ({@link Delimiter#BOS}).
 * A {@code .txt} file is encoded in pieces cut where a byte-level BPE gives the same ids ({@link #cutPoint})
 * when the tokenizer gives the same ids that way ({@link TextTokenizer#cutsAfterNewlines()}), else
 * whole. The held-out file gets the pieces that start in the last {@code valFraction} of the input
 * bytes.
 */
public final class CorpusEncoder {

    /** How documents are joined. */
    public enum Delimiter { EOS, BOS }

    /**
     * @param replaceInvalidUtf8 read invalid UTF-8 as U+FFFD instead of refusing the file
     * @param pieceChars         the size a .txt piece is cut at, when it may be cut
     */
    public record Options(List<Path> inputs, Path out, double valFraction, Delimiter delimiter, int threads,
                          boolean replaceInvalidUtf8, int pieceChars) {
    }

    public record Result(long trainTokens, long valTokens, long documents, long bytes, double seconds, Path train, Path val) {
    }

    /**
     * A piece of a document; {@code start}/{@code end} say whether the document starts or ends with
     * it; it came from input bytes [firstByte, endByte).
     */
    private record Piece(String text, boolean start, boolean end, long firstByte, long endByte) {
    }

    private CorpusEncoder() {
    }

    public static Result run(TextTokenizer tokenizer, Options o, PrintWriter err) throws IOException {
        int delimiter = switch (o.delimiter()) {
            case EOS -> tokenizer.eos().orElseThrow(() -> new IOException(tokenizer.name() + " has no EOS token; join documents with --delimiter bos"));
            case BOS -> tokenizer.bos().orElseThrow(() -> new IOException(tokenizer.name() + " has no BOS token; join documents with --delimiter eos"));
        };
        List<Path> files = files(o.inputs());
        long total = 0;
        for (Path f : files) total += Files.size(f);
        long valFrom = o.valFraction() > 0 ? (long) Math.ceil(total * (1 - o.valFraction())) : Long.MAX_VALUE;
        Path train = o.out().resolve("train.bin"), val = o.valFraction() > 0 ? o.out().resolve("val.bin") : null;
        Files.createDirectories(o.out());
        long t0 = System.nanoTime();
        Encoding e = new Encoding(tokenizer, o, delimiter, files, total, valFrom, err);
        ExecutorService pool = Executors.newFixedThreadPool(Math.max(1, o.threads()), r -> {
            Thread t = new Thread(r, "tokenize");
            t.setDaemon(true);
            return t;
        });
        try {
            AtomicFileWriter.write(train, trainChannel -> {
                TokenFile.Appender trainTokens = new TokenFile.Appender(trainChannel, tokenizer.vocabSize());
                if (val == null) {
                    e.encodeAll(pool, trainTokens, null);
                } else {
                    AtomicFileWriter.write(val, valChannel -> {
                        TokenFile.Appender valTokens = new TokenFile.Appender(valChannel, tokenizer.vocabSize());
                        e.encodeAll(pool, trainTokens, valTokens);
                        valTokens.finish();
                        e.valTokens = valTokens.count();
                    });
                }
                trainTokens.finish();
                e.trainTokens = trainTokens.count();
            });
        } finally {
            pool.shutdownNow();
        }
        return new Result(e.trainTokens, e.valTokens, e.documents, total, (System.nanoTime() - t0) / 1e9, train, val);
    }

    /** The files of the inputs: a folder's *.txt and *.jsonl in natural order, a file as it is. */
    static List<Path> files(List<Path> inputs) throws IOException {
        List<Path> files = new ArrayList<>();
        for (Path in : inputs) {
            if (Files.isDirectory(in)) {
                try (Stream<Path> s = Files.list(in)) {
                    List<Path> listed = s.filter(p -> isText(p) || isJsonLines(p)).sorted(Corpus.NATURAL_ORDER).toList();
                    if (listed.isEmpty()) throw new IOException(in + ": holds no *.txt or *.jsonl files");
                    files.addAll(listed);
                }
            } else if (Files.isRegularFile(in)) {
                files.add(in);
            } else {
                throw new IOException(in + ": no such file or folder");
            }
        }
        return files;
    }

    private static boolean isText(Path p) {
        return p.getFileName().toString().endsWith(".txt");
    }

    private static boolean isJsonLines(Path p) {
        return p.getFileName().toString().endsWith(".jsonl");
    }

    /** One encoding pass: reading, the pool and the two outputs. */
    private static final class Encoding {
        private final TextTokenizer tokenizer;
        private final Options o;
        private final int delimiter;
        private final List<Path> files;
        private final long valFrom;
        private final Progress progress;
        private final ObjectMapper json = new ObjectMapper();
        private final List<Piece> batch = new ArrayList<>();
        private long batchChars, bytesDone, tokensDone, documents, trainTokens, valTokens;
        private final long t0 = System.nanoTime();

        Encoding(TextTokenizer tokenizer, Options o, int delimiter, List<Path> files, long total, long valFrom, PrintWriter err) {
            this.tokenizer = tokenizer;
            this.o = o;
            this.delimiter = delimiter;
            this.files = files;
            this.valFrom = valFrom;
            this.progress = new Progress(err, "tokenize", 0, total, 5000);
        }

        void encodeAll(ExecutorService pool, TokenFile.Appender train, TokenFile.Appender val) throws IOException {
            long fileStart = 0;
            for (Path f : files) {
                if (isJsonLines(f)) readJsonLines(f, fileStart, pool, train, val);
                else readText(f, fileStart, pool, train, val);
                fileStart += Files.size(f);
            }
            flush(pool, train, val);
        }

        /** A .txt file as one document, decoded strictly (or with U+FFFD) and cut into pieces where allowed. */
        private void readText(Path f, long fileStart, ExecutorService pool, TokenFile.Appender train, TokenFile.Appender val) throws IOException {
            CharsetDecoder decoder = decoder();
            ByteBuffer in = ByteBuffer.allocate(1 << 22);
            CharBuffer out = CharBuffer.allocate(1 << 22);
            StringBuilder text = new StringBuilder();
            long consumed = 0, pieceFirstByte = fileStart;
            boolean first = true;
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                boolean eof = false;
                while (!eof) {
                    eof = ch.read(in) < 0;
                    in.flip();
                    CoderResult r;
                    do {
                        r = decoder.decode(in, out, eof);
                        if (r.isError()) {
                            throw new IOException(f + ": invalid UTF-8 at byte offset " + (consumed + in.position())
                                    + " (pass --invalid-utf8 replace to read such bytes as U+FFFD)");
                        }
                        out.flip();
                        text.append(out);
                        out.clear();
                    } while (r.isOverflow());
                    if (eof) {
                        do {
                            r = decoder.flush(out);
                            out.flip();
                            text.append(out);
                            out.clear();
                        } while (r.isOverflow());
                    }
                    consumed += in.position();
                    in.compact();
                    while (tokenizer.cutsAfterNewlines() && text.length() >= o.pieceChars()) {
                        int cut = cutPoint(text, o.pieceChars());
                        if (cut <= 0) break;
                        String piece = text.substring(0, cut);
                        text.delete(0, cut);
                        long endByte = pieceFirstByte + utf8Length(piece);
                        add(new Piece(piece, first, false, pieceFirstByte, endByte), pool, train, val);
                        pieceFirstByte = endByte;
                        first = false;
                    }
                }
            }
            add(new Piece(text.toString(), first, true, pieceFirstByte, fileStart + consumed), pool, train, val);
            documents++;
        }

        /**
         * The last index at or before {@code near} where a byte-level BPE's pre-tokenizer always
         * splits and a piece ending there is split as inside the text, or -1: after a '\n' that
         * stands between two non-whitespace characters, or before a space that a non-whitespace
         * character precedes and a letter follows (" word" is a piece of every such pattern, and no
         * piece holds a space past its first character). Not inside a whitespace run: at the end of
         * a text the run is one piece (GPT-2's {@code \s+(?!\S)}), inside it its last character
         * splits off.
         */
        static int cutPoint(CharSequence text, int near) {
            for (int i = Math.min(near, text.length() - 2); i >= 2; i--) {
                char before = text.charAt(i - 1), at = text.charAt(i);
                if (before == '\n' && !isSpace(at) && !isSpace(text.charAt(i - 2))) return i;
                if (at == ' ' && !isSpace(before) && Character.isLetter(text.charAt(i + 1))) return i;
            }
            return -1;
        }

        /** Unicode White_Space, as the tokenizers' {@code \s} sees it (Java's isWhitespace alone misses NBSP). */
        private static boolean isSpace(char c) {
            return Character.isWhitespace(c) || Character.isSpaceChar(c) || c == '\u0085';
        }

        private void readJsonLines(Path f, long fileStart, ExecutorService pool, TokenFile.Appender train, TokenFile.Appender val)
                throws IOException {
            long position = fileStart;
            int line = 0;
            try (var reader = new java.io.BufferedReader(new java.io.InputStreamReader(Files.newInputStream(f), decoder()))) {
                String s;
                while (true) {
                    line++;
                    try {
                        s = reader.readLine();
                    } catch (java.nio.charset.CharacterCodingException e) {
                        throw new IOException(f + ":" + line + ": invalid UTF-8 (pass --invalid-utf8 replace to read such bytes as U+FFFD)", e);
                    }
                    if (s == null) break;
                    long lineStart = position;
                    position += utf8Length(s) + 1;
                    if (s.isBlank()) continue;
                    JsonNode node;
                    try {
                        node = json.readTree(s);
                    } catch (com.fasterxml.jackson.core.JacksonException e) {
                        throw new IOException(f + ":" + line + ": not valid JSON: " + e.getOriginalMessage(), e);
                    }
                    if (node == null || !node.path("text").isTextual()) {
                        throw new IOException(f + ":" + line + ": each line must be a JSON object with a \"text\" string");
                    }
                    add(new Piece(node.get("text").asText(), true, true, lineStart, position), pool, train, val);
                    documents++;
                }
            }
        }

        private CharsetDecoder decoder() {
            CodingErrorAction onError = o.replaceInvalidUtf8() ? CodingErrorAction.REPLACE : CodingErrorAction.REPORT;
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(onError).onUnmappableCharacter(onError);
        }

        private void add(Piece p, ExecutorService pool, TokenFile.Appender train, TokenFile.Appender val) throws IOException {
            batch.add(p);
            batchChars += p.text().length();
            // 16 pieces a thread (at most 16 M characters): enough that one library call keeps every thread busy to its end
            if (batchChars >= Math.min(16L * o.pieceChars() * Math.max(1, o.threads()), 1L << 24) || batch.size() >= 4096) flush(pool, train, val);
        }

        /** Encodes the batch on the pool and appends its ids in order, with the delimiters. */
        private void flush(ExecutorService pool, TokenFile.Appender train, TokenFile.Appender val) throws IOException {
            if (batch.isEmpty()) return;
            int[][] ids = tokenizer.encodeAll(batch.stream().map(Piece::text).toList(), pool);
            for (int i = 0; i < batch.size(); i++) {
                Piece p = batch.get(i);
                int[] encoded = ids[i];
                TokenFile.Appender to = val != null && p.firstByte() >= valFrom ? val : train;
                if (p.start() && o.delimiter() == Delimiter.BOS) to.append(new int[]{delimiter});
                to.append(encoded);
                if (p.end() && o.delimiter() == Delimiter.EOS) to.append(new int[]{delimiter});
                tokensDone += encoded.length;
                bytesDone = p.endByte();
            }
            batch.clear();
            batchChars = 0;
            double seconds = (System.nanoTime() - t0) / 1e9;
            progress.update(bytesDone, String.format("%,d tokens, %,.0f tokens/s", tokensDone, tokensDone / Math.max(1e-9, seconds)));
        }
    }

    /** Where the encoder may cut {@code text} at or before {@code near} ({@link Encoding#cutPoint}), or -1. */
    static int cutPointOf(CharSequence text, int near) {
        return Encoding.cutPoint(text, near);
    }

    /** Bytes of {@code s} in UTF-8 (an unpaired surrogate as the 3 bytes of U+FFFD). */
    static long utf8Length(CharSequence s) {
        long n = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < 0x80) n++;
            else if (c < 0x800) n += 2;
            else if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                n += 4;
                i++;
            } else n += 3;
        }
        return n;
    }
}
