package dev.distillery.trainer.report;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.markers.SeriesMarkers;

import dev.distillery.runtime.io.AtomicFileWriter;

/** Loss and evaluation curves as one PNG (XChart, headless), written crash-safe. */
public final class Curves {

    private Curves() {
    }

    /** A named series of (step, value) points. */
    public record Series(String name, List<Number> steps, List<Number> values) {
        public static Series of(String name, List<Map<String, Object>> records, String kind, String key) {
            List<Number> x = new ArrayList<>(), y = new ArrayList<>();
            for (Map<String, Object> r : records) {
                if (kind.equals(r.get("kind")) && r.get(key) instanceof Number v && Double.isFinite(v.doubleValue())) {
                    x.add((Number) r.get("step"));
                    y.add(v);
                }
            }
            return new Series(name, x, y);
        }
    }

    /** Two charts side by side: training losses (left) and evaluation perplexities (right). */
    public static void write(Path png, String title, List<Series> losses, List<Series> evals) throws IOException {
        System.setProperty("java.awt.headless", "true");
        XYChart left = chart(title + ": training loss", "loss", losses);
        XYChart right = chart(title + ": held-out perplexity", "perplexity", evals);
        java.awt.image.BufferedImage a = BitmapEncoder.getBufferedImage(left);
        java.awt.image.BufferedImage b = BitmapEncoder.getBufferedImage(right);
        java.awt.image.BufferedImage both = new java.awt.image.BufferedImage(a.getWidth() + b.getWidth(),
                Math.max(a.getHeight(), b.getHeight()), java.awt.image.BufferedImage.TYPE_INT_RGB);
        java.awt.Graphics2D g = both.createGraphics();
        g.setColor(java.awt.Color.WHITE);
        g.fillRect(0, 0, both.getWidth(), both.getHeight());
        g.drawImage(a, 0, 0, null);
        g.drawImage(b, a.getWidth(), 0, null);
        g.dispose();
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        javax.imageio.ImageIO.write(both, "png", bytes);
        byte[] data = bytes.toByteArray();
        AtomicFileWriter.write(png, ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(data)));
    }

    private static XYChart chart(String title, String yLabel, List<Series> series) {
        XYChart c = new XYChartBuilder().width(640).height(420).title(title).xAxisTitle("step").yAxisTitle(yLabel).build();
        c.getStyler().setLegendPosition(org.knowm.xchart.style.Styler.LegendPosition.InsideNE);
        c.getStyler().setChartBackgroundColor(java.awt.Color.WHITE);
        boolean any = false;
        for (Series s : series) {
            if (s.steps().isEmpty()) continue;
            XYSeries xy = c.addSeries(s.name(), s.steps(), s.values());
            xy.setMarker(s.steps().size() > 40 ? SeriesMarkers.NONE : SeriesMarkers.CIRCLE);
            any = true;
        }
        if (!any) c.addSeries("(no data yet)", new double[]{0}, new double[]{0});
        return c;
    }
}
